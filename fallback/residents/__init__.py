"""The residents' side of an outage: the public notice and its versions,
waiting times, and the pre-filled 交付申請書.
"""
