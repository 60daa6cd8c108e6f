"""Table-driven tests of the dotenv parser the companion and the CLI share."""
import pytest

from antibody_reload import envfile

CASES = [
    ("plain", "A=1\nB=two\n", {"A": "1", "B": "two"}),
    ("comments and blanks", "# c\n\n  A = x \n", {"A": "x"}),
    ("export prefix", "export A=1\n", {"A": "1"}),
    ("double quotes keep spaces and escapes", 'A=" a \\"b\\" \\n"\n', {"A": ' a "b" \n'}),
    ("single quotes are literal", "A='x # y \\n'\n", {"A": "x # y \\n"}),
    ("inline comment on unquoted value", "A=on # fast\n", {"A": "on"}),
    ("hash without a space is part of the value", "A=a#b\n", {"A": "a#b"}),
    ("empty value", "A=\n", {"A": ""}),
    ("value with equals", "A=b=c\n", {"A": "b=c"}),
    ("later line wins", "A=1\nA=2\n", {"A": "2"}),
    ("not KEY=VALUE lines are skipped", "junk\n=x\n1A=2\nB=3\n", {"B": "3"}),
]


@pytest.mark.parametrize("name,text,want", CASES, ids=[c[0] for c in CASES])
def test_parse(name, text, want):
    assert envfile.parse(text) == want


def test_digest_is_sha256_hex_of_utf8():
    # printf 'on' | sha256sum
    assert envfile.digest("on") == "b8d31e852725afb1e26d53bab6095b2bff1749c9275be13ed1c05a56ed31ec09"


def test_read_missing_file_is_none(tmp_path):
    assert envfile.read(str(tmp_path / "absent.env")) is None
