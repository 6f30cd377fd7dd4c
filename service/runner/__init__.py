"""Job lifecycle: the state machine (pure) and, later, the runner that drives it."""
