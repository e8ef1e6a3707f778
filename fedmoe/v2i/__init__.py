"""V2I semantic-AoI camera scheduling and beamforming (paper 002)."""
