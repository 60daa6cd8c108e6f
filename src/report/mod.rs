//! Reporting: what happened to each plan, told to the people and systems around Antibody.
//! Conditions are computed in [`crate::conditions`]; Events go out from here.

pub mod events;
