//! The outbox demo's sample domain, kept apart from the processor library it uses: the seed's
//! Activity App read models ([`activity`]), a load generator that inserts its events into the
//! outbox ([`load`]), and the report and verifier computed from the database ([`report`]).
//! `clustera outbox load|report|verify|process` and `clustera demo` run them.

pub mod activity;
pub mod load;
pub mod report;
