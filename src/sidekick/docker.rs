//! Docker port discovery (placeholder; being written).
