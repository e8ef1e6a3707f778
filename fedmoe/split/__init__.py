"""Split learning and distributed experts over noisy feature links ([P004])."""
