"""2D face handling shared by every backend: tracking, alignment to the 256² template, masks, paste-back."""
