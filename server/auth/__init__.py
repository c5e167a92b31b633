"""Authentication: challenges, bearer tokens, and the sweeper of expired ones."""
