//! Integration tests for corekv live in tests/tests.
