"""cloudsim: a stand-in for the vendor cloud register, serving the upstream contract."""
