//! The fake Kubernetes API server (src/fake_apiserver) as a process of its own, for the tools
//! that need one outside a test's address space: `hack/kind-e2e.sh --fake-apiserver` runs the
//! real kubectl, helm, kubectl-pim and pim-operator against it, and the load harness can run it
//! apart from the operator. See `fake_apiserver::process` for its options.

fn main() -> std::process::ExitCode {
    pim_testkit::fake_apiserver::process::main(std::env::args_os())
}
