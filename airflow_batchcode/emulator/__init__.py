"""Local emulator of the ABS Occupation Coding Service."""
