"""The reproduction study launcher: studies of rows, shared stages, reports and plots."""
