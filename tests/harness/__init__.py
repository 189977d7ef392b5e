"""Test harness owned by the tests: fakes of our own ports and a model of Lambda's stream delivery."""
