//! The configuration reference in `docs/cli/` is what the binary prints.

#[test]
fn the_cli_reference_is_current() {
    mesh_testkit::check_cli_doc(env!("CARGO_BIN_EXE_meshsim"), &[], "meshsim");
}
