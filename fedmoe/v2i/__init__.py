"""V2I semantic-AoI camera scheduling and beamforming ([P002])."""
