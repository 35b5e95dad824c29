"""The connection layer: the RESP protocol, a link that stays up, Cluster and Sentinel."""
