//! The configuration reference in `docs/cli/` is what the binary prints.

#[test]
fn the_cli_reference_is_current() {
    let bin = env!("CARGO_BIN_EXE_meshctl");
    mesh_testkit::check_cli_doc(bin, &[], "meshctl");
    for sub in [
        "graph", "routes", "watch", "validate", "explain", "propose", "apply", "diff",
    ] {
        mesh_testkit::check_cli_doc(bin, &[sub], &format!("meshctl-{sub}"));
    }
    for sub in ["start", "status", "advance", "rollback", "repropose"] {
        mesh_testkit::check_cli_doc(bin, &["rollout", sub], &format!("meshctl-rollout-{sub}"));
    }
    for sub in ["list", "show", "approve", "reject"] {
        mesh_testkit::check_cli_doc(
            bin,
            &["approvals", sub],
            &format!("meshctl-approvals-{sub}"),
        );
    }
}
