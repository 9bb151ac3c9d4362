"""The mirror as the appliance runs it: sync jobs and commands, the snapshot
generations, and the door through which everything else reads the current
one.
"""
