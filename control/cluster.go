package control

// Cluster is the instance's BGP speaker and drain that SetCluster gave, or
// nil: for a program that holds the Manager rather than the socket (package
// pkg/tapvs).
func (m *Manager) Cluster() Cluster { return m.clusterOf() }
