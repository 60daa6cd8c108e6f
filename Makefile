# The two commands a new user needs; see README.md.
.PHONY: test demo bench crd check
test:        ## every test against a real local control plane (what CI runs)
	tests/run.sh
demo:        ## the four matrix alerts end to end, with a timing table
	demo/run.sh
crd:         ## regenerate crds/patchplan.yaml from the Rust types
	cargo run --quiet -- crd > crds/patchplan.yaml
check:       ## formatting and lints, as CI runs them
	cargo fmt --all --check && cargo clippy --workspace --all-targets -- -D warnings
