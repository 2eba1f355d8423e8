package policy

import (
	"time"
)

// Defaults for settings left out of the file.
// DefaultRedactions are what is redacted from the evidence kept of a
// container unless targets.docker.evidence.redact says otherwise: the
// values of password, secret, token and key settings, bearer tokens, and
// passwords in URLs. A pattern's first group, where it has one, is what is
// replaced.
var DefaultRedactions = []string{
	`(?i)(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)["']?\s*[:=]\s*["']?([^\s"',;&]+)`,
	`(?i)\bbearer\s+([A-Za-z0-9._~+/=-]+)`,
	`://[^/\s:@]+:([^@\s/]+)@`,
}

const (
	DefaultMaxBodyBytes      = 1 << 20
	DefaultPersistTimeout    = 1500 * time.Millisecond
	DefaultWorkers           = 4
	DefaultMaxConcurrent     = 4
	DefaultStormMaxActions   = 20
	DefaultStormWindow       = 10 * time.Minute
	DefaultReopenAfter       = 5 * time.Minute
	DefaultPollInterval      = time.Second
	DefaultFleetPollInterval = 10 * time.Second
	DefaultUnreachableFor    = 5 * time.Minute
	DefaultRetentionInterval = 10 * time.Minute
	DefaultRevertInterval    = 2 * time.Second
	DefaultRebootValidation  = 2 * time.Minute
	DefaultCriticalThreshold = 3
	DefaultCriticalWindow    = 30 * time.Minute
	DefaultCriticalInterval  = 10 * time.Second
	DefaultDockerHost        = "unix:///var/run/docker.sock"
	DefaultRequireLabel      = "selfheal.enable=true"
	DefaultStopTimeout       = 10 * time.Second
	DefaultChronicMax        = 5
	DefaultChronicWindow     = 7 * 24 * time.Hour
	// MaxChronicWindow is how long actions are kept (store retention).
	MaxChronicWindow        = 7 * 24 * time.Hour
	DefaultEvidenceLogLines = 50
	DefaultEvidenceLogBytes = 8 << 10
	DefaultFailureWindow    = 10 * time.Minute
	DefaultMaxFailures      = 3
	DefaultCooldownB        = 5 * time.Minute
	DefaultTimeout          = 2 * time.Minute
	DefaultVerifyTimeout    = 30 * time.Second
	DefaultVerifyStableFor  = 3 * time.Second
	MaxFailureWindow        = time.Hour // service_failures keeps one hour
)

func (c *Config) setDefaults() {
	w := &c.Webhook
	if w.MaxBodyBytes == 0 {
		w.MaxBodyBytes = DefaultMaxBodyBytes
	}
	setDuration(&w.PersistTimeout, DefaultPersistTimeout)
	e := &c.Engine
	if e.Workers == 0 {
		e.Workers = DefaultWorkers
	}
	if e.MaxConcurrentActions == 0 {
		e.MaxConcurrentActions = DefaultMaxConcurrent
	}
	if e.StormBrake.MaxActions == 0 {
		e.StormBrake.MaxActions = DefaultStormMaxActions
	}
	setDuration(&e.StormBrake.Window, DefaultStormWindow)
	if !e.Chronic.set {
		e.Chronic = Chronic{MaxRemediations: DefaultChronicMax, Window: Duration(DefaultChronicWindow)}
	}
	setDuration(&e.ReopenAfter, DefaultReopenAfter)
	if c.Node.Fleet {
		// Webhook replicas wake a node's engine when they queue its jobs,
		// and an idle engine sleeps until its next deferred job is due:
		// polling is only the fallback, and costs the database per node.
		setDuration(&e.PollInterval, DefaultFleetPollInterval)
	}
	setDuration(&e.PollInterval, DefaultPollInterval)
	setDuration(&e.UnreachableFor, DefaultUnreachableFor)
	setDuration(&e.RetentionInterval, DefaultRetentionInterval)
	setDuration(&e.RevertInterval, DefaultRevertInterval)
	setDuration(&e.RebootValidationDelay, DefaultRebootValidation)
	if e.CriticalEvents.Threshold == 0 {
		e.CriticalEvents.Threshold = DefaultCriticalThreshold
	}
	setDuration(&e.CriticalEvents.Window, DefaultCriticalWindow)
	setDuration(&e.CriticalEvents.Interval, DefaultCriticalInterval)
	setDuration(&c.Alertmanager.Interval, 15*time.Second)
	setDuration(&c.Alertmanager.PausedFor, 15*time.Minute)
	setDuration(&c.Alertmanager.Lookback, time.Hour)
	if c.Node.Unlabelled == "" {
		// One host: an alert that names no host is about this one. A fleet:
		// it could be about any, so none acts on it.
		c.Node.Unlabelled = UnlabelledAct
		if c.Node.Fleet {
			c.Node.Unlabelled = UnlabelledRefuse
		}
	}
	setDuration(&c.Node.HeartbeatInterval, DefaultHeartbeatInterval)
	setDuration(&c.Node.SilentAfter, DefaultSilentAfter)
	d := &c.Targets.Docker
	if d.Host == "" {
		d.Host, d.hostDefaulted = DefaultDockerHost, true
	}
	if d.RequireLabel == "" {
		d.RequireLabel = DefaultRequireLabel
	}
	setDuration(&d.StopTimeout, DefaultStopTimeout)
	if !d.Evidence.set {
		d.Evidence = Evidence{LogLines: DefaultEvidenceLogLines, LogBytes: DefaultEvidenceLogBytes}
	}
	if d.Evidence.Redact == nil {
		d.Evidence.Redact = DefaultRedactions
	}
	// Remediations get their defaults as they are decoded.
	for _, r := range c.Remediations {
		switch {
		case r == nil:
		case r.Action != nil && len(r.Steps) == 0 && len(r.Sequence) == 0:
			r.Steps = []Action{*r.Action}
		case len(r.Sequence) > 0 && len(r.Steps) == 0 && r.Action == nil:
			r.Steps, r.sequence = r.Sequence, true
		}
	}
}

func setDuration(d *Duration, def time.Duration) {
	if *d == 0 {
		*d = Duration(def)
	}
}
