//! The macro's compile-time behaviour: every pass case compiles and runs, every fail case
//! fails with the checked-in message (`TRYBUILD=overwrite` regenerates the `.stderr` files).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
