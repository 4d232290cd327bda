"""stage2_student package."""
