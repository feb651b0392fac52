//! Health checks (placeholder; being written).
