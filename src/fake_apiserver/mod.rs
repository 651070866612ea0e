//! An in-process fake Kubernetes API server on 127.0.0.1, for integration tests and the load
//! harness. Test support: its fidelity is part of the test suite's honesty.
