// Placeholder: built out by its issue (see docs/ARCHITECTURE.md).
