"""The demo and the scripted outage day. The appliance never imports this
package: it drives the appliance from outside, as the ward would.
"""
