"""Side-by-side benchmarks: RHAPSODY against the raw engines, in one process run."""
