"""Split learning and distributed experts over noisy feature links (paper 004)."""
