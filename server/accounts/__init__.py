"""Accounts: registration, signed device lists, look-alike usernames,
invites.
"""
