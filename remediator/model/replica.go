package model

// Replica is one engine sharing the database.
type Replica struct {
	ID, Host, Version, ConfigFingerprint string
	Remediations                         []string
	// OnlyAlive records the heartbeat without counting the replicas (a
	// scan of all of them): Heartbeat returns -1, -1.
	OnlyAlive bool
}

// NodeBeat is what a node's engine says about itself at each heartbeat.
type NodeBeat struct {
	Name              string   // lower case
	Names             []string // name and aliases, lower case
	Engine            string   // the engine's replica id
	Version           string
	ConfigFingerprint string
}
