//go:build race

package raft

// raceEnabled: the simulation runs fewer seeds under the race detector.
const raceEnabled = true
