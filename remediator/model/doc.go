// Package model is selfheal's remediation vocabulary: the alerts a
// delivery brings, the jobs queued for them, the decision state a job is
// judged on, the intents and outcomes an action records, and the audit
// trail's events.
//
// It imports nothing of selfheal's. The engine decides in these terms and
// the store persists them, so neither depends on the other's internals:
// the engine reaches the database only through its Claim and Store
// interfaces, which the store implements.
package model
