"""Staff: local accounts, sessions, login, and the auditor's desk over the
audit chain.
"""
