"""Everything that talks to the outside world, behind small protocols."""
