"""The two-person rule: destructive procedures run only after a second, authorised person agrees."""
