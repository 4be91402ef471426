"""The study machinery: where a study lives (storage), opening it (study), the stop flag, one worker's trial
loop, and the --workers parent (supervisor)."""
