"""stage1_teacher package."""
