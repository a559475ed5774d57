"""Connecting Campaign: its REST API for webhooks (`client`) and registering the receiver with
it (`registration`: setup, status, teardown). The command line is receiver/cli/campaign.py.
"""
