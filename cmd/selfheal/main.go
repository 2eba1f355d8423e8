// Command selfheal is a self-healing engine for hosts that run
// containerised services: an Alertmanager webhook receiver that repairs what
// alerts report, with its state in PostgreSQL. See `selfheal --help`.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/signal"
	"os/user"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"

	"github.com/selfheal/selfheal/alerting"
	"github.com/selfheal/selfheal/exporter"
	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/engine"
	"github.com/selfheal/selfheal/remediator/policy"
	"github.com/selfheal/selfheal/remediator/report"
	"github.com/selfheal/selfheal/remediator/server"
	"github.com/selfheal/selfheal/remediator/simulate"
	"github.com/selfheal/selfheal/remediator/store"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	app := kingpin.New("selfheal", "Repairs what Prometheus alerts report: the smallest fix first, never looping, every decision written down.")
	app.Version(version.Print("selfheal"))
	kingpin.ManPageTemplate = manPageTemplate(kingpin.ManPageTemplate)
	app.HelpFlag.Short('h')
	logCfg := &promslog.Config{}
	promslogflag.AddFlags(app, logCfg)
	// The seed's name for the log level, as a default the flag overrides.
	if v := os.Getenv(policy.EnvSeedLogLevel); v != "" {
		app.GetFlag("log.level").Default(strings.ToLower(strings.TrimSpace(v)))
	}

	serve := app.Command("serve", "Run the webhook, the engine and /metrics.")
	serveConfig := serve.Flag("config.file", "Configuration file.").Default("selfheal.yml").String()
	webFlags := kingpinflag.AddFlags(serve, ":9595")
	serveExporter := serve.Flag("exporter", "Serve the built-in exporter's metrics on /metrics too.").Default("true").Bool()
	serveLifecycle := serve.Flag("web.enable-lifecycle", "Enable POST /-/reload (SIGHUP reloads the configuration either way).").Default("false").Bool()
	serveShutdown := serve.Flag("shutdown.timeout", "How long a stop waits for actions in flight; past it they are recorded as interrupted and followed up at the next start. Keep it below the service manager's stop timeout.").Default("60s").Duration()
	serveCollectors := exporter.AddFlags(serve)
	serveWebhookOnly := serve.Flag("webhook-only", "Run the webhook alone (a fleet's ingest replica): alerts are stored and queued for the nodes' engines; no engine, Docker or exporter here.").Default("false").Bool()

	exp := app.Command("exporter", "Run the exporter alone, for hosts that are watched but not remediated.")
	expConfig := exp.Flag("config.file", "Configuration file for targets.docker and exporter.probes (optional).").String()
	expWeb := kingpinflag.AddFlags(exp, ":9595")
	expCollectors := exporter.AddFlags(exp)

	migrate := app.Command("migrate", "Apply database migrations (serve also applies them at start).")
	migrateConfig := migrate.Flag("config.file", "Configuration file with database_url (SELFHEAL_DATABASE_URL overrides it).").String()

	check := app.Command("check-config", "Validate configuration files.")
	checkConfig := check.Flag("config.file", "Configuration file, when no file is named as an argument.").Default("selfheal.yml").String()
	checkFiles := check.Arg("file", "Configuration files to check (as promtool check config takes them).").Strings()
	checkOutput := check.Flag("output", "text or json (every error and warning, for scripts).").Default("text").Enum("text", "json")

	sim := app.Command("simulate", "Post a test alert to selfheal's webhook, or to an Alertmanager.")
	simName := sim.Arg("alertname", "Alert name, e.g. ServiceDown.").Required().String()
	simLabels := sim.Arg("labels", "More labels as label=value.").Strings()
	simWebhook := sim.Flag("webhook.url", "selfheal's webhook.").Default("http://localhost:9595/api/v1/webhook").String()
	simAM := sim.Flag("alertmanager.url", "Post to this Alertmanager instead of the webhook.").String()
	simAnnotations := sim.Flag("annotation", "An annotation as name=value (repeatable).").Strings()
	simResolved := sim.Flag("resolved", "Send the alert as resolved.").Bool()
	simStartsAt := sim.Flag("starts-at", "The alert's start (RFC 3339); reuse it to resolve the same occurrence. Default: now.").String()
	simAMHTTP := sim.Flag("alertmanager.http-config.file", "How to reach --alertmanager.url: a file of Prometheus' http_config (TLS, basic auth, a bearer token, a proxy).").String()

	plan := app.Command("plan", "Say what selfheal would do if an alert started firing now, changing nothing. Exit 0 when it would act, 3 when not.")
	planConfig := plan.Flag("config.file", "Configuration file.").Default("selfheal.yml").String()
	planName := plan.Arg("alertname", "Alert name, e.g. ServiceDown (not with --alertmanager.url).").String()
	planLabels := plan.Arg("labels", "More labels as label=value.").Strings()
	planAM := plan.Flag("alertmanager.url", "Plan every alert firing in this Alertmanager now (not silenced or inhibited).").String()
	planOutput := plan.Flag("output", "table or json.").Default("table").Enum("table", "json")
	planAMHTTP := plan.Flag("alertmanager.http-config.file", "How to reach --alertmanager.url: a file of Prometheus' http_config (TLS, basic auth, a bearer token, a proxy).").String()

	events := app.Command("events", "Print recent alerts, decisions and actions.")
	eventsConfig := events.Flag("config.file", "Configuration file with database_url (SELFHEAL_DATABASE_URL overrides it).").String()
	eventsLimit := events.Flag("limit", "At most this many lines.").Default("50").Int()
	eventsSince := events.Flag("since", "Only this far back.").Default("24h").Duration()
	eventsOutput := events.Flag("output", "table or json.").Default("table").Enum("table", "json")
	eventsDetails := events.Flag("details", "Show each action's evidence: its target's state and last log lines before it was changed (json: every recorded detail).").Bool()

	pause := app.Command("pause", "Stop all remediation on every replica until resume.")
	pauseConfig := pause.Flag("config.file", "Configuration file with database_url.").String()
	pauseReason := pause.Flag("reason", "Why; shown in every skipped decision.").Required().String()
	resume := app.Command("resume", "Resume remediation after pause.")
	resumeConfig := resume.Flag("config.file", "Configuration file with database_url.").String()
	clear := app.Command("clear", "Say a target's cause is fixed: its failures, escalations and cooldowns so far no longer count, and its next outage starts the ladder again. Recorded as an event, with who ran it.")
	clearConfig := clear.Flag("config.file", "Configuration file with database_url.").String()
	clearTarget := clear.Arg("target", "The target (container) to clear, as selfheal plan and the status page name it.").Required().String()
	clearRemediation := clear.Flag("remediation", "Clear this remediation only (default: all of the target's).").String()
	clearReason := clear.Flag("reason", "Why; recorded with the clear.").String()
	clearBy := clear.Flag("by", "Who clears (default: the user running selfheal, and the one behind sudo).").Default(operator()).String()

	nodes := app.Command("nodes", "List the fleet's nodes: last heartbeat, queued jobs, version, configuration fingerprint.")
	nodesConfig := nodes.Flag("config.file", "Configuration file with database_url (and node.silent_after).").String()
	nodesOutput := nodes.Flag("output", "table or json.").Default("table").Enum("table", "json")
	node := app.Command("node", "Manage the fleet's nodes.")
	nodeAdd := node.Command("add", "Create the database role of a node (or, with --webhook, of a webhook-only replica) and print its database URL. Again for an existing one: a new password.")
	nodeAddConfig := nodeAdd.Flag("config.file", "Configuration file with database_url: a role that may create roles.").String()
	nodeAddWebhook := nodeAdd.Flag("webhook", "A role for a webhook-only replica: it can only ingest.").Bool()
	nodeAddName := nodeAdd.Arg("name", "The node's name (its node.name).").Required().String()

	cmd, err := app.Parse(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	logger := promslog.New(logCfg)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	switch cmd {
	case serve.FullCommand():
		cfg, err := loadConfig(*serveConfig)
		if err != nil {
			logger.Error("invalid configuration", "err", err)
			return 1
		}
		logger.Info("starting selfheal", "version", version.Info(), "config", *serveConfig)
		for _, w := range policy.UnreadEnvironment(os.Getenv) {
			logger.Warn(w)
		}
		lib, err := nvmlOverride(logger)
		if err != nil {
			logger.Error("invalid NVML fixture", "err", err)
			return 1
		}
		o := server.Options{Config: cfg, Web: webFlags, Logger: logger, ProcPath: *serveCollectors.ProcPath, NVML: lib,
			ShutdownTimeout: *serveShutdown, EnableLifecycle: *serveLifecycle,
			Reload: func() (*policy.Config, error) { return loadConfig(*serveConfig) }}
		if *serveExporter && !*serveWebhookOnly {
			o.ExporterFlags = serveCollectors
		}
		o.WebhookOnly = *serveWebhookOnly
		return exitCode(logger, server.Run(ctx, o))
	case exp.FullCommand():
		cfg, err := policy.Parse(nil)
		if *expConfig != "" {
			cfg, err = loadConfig(*expConfig)
		}
		if err != nil {
			logger.Error("invalid configuration", "err", err)
			return 1
		}
		logger.Info("starting selfheal exporter", "version", version.Info())
		return exitCode(logger, server.RunExporter(ctx, server.ExporterOptions{Config: cfg, Flags: expCollectors, Web: expWeb, Logger: logger}))
	case migrate.FullCommand():
		return withStore(ctx, *migrateConfig, func(st *store.Store) error {
			n, err := st.Migrate(ctx)
			if err == nil {
				fmt.Printf("applied %d migration(s); the schema is current\n", n)
			}
			return err
		})
	case check.FullCommand():
		files := *checkFiles
		if len(files) == 0 {
			files = []string{*checkConfig}
		}
		rc := 0
		for _, f := range files {
			rc = max(rc, checkConfigFile(f, *checkOutput))
		}
		return rc
	case sim.FullCommand():
		if err := runSimulate(ctx, *simName, *simLabels, *simAnnotations, *simResolved, *simStartsAt, *simWebhook, *simAM, *simAMHTTP); err != nil {
			return cliError("simulate", err)
		}
		return 0
	case plan.FullCommand():
		cfg, err := loadConfig(*planConfig)
		if err != nil {
			return cliError("plan", err)
		}
		acts, err := runPlan(ctx, cfg, logger, *planName, *planLabels, *planAM, *planAMHTTP, *planOutput)
		if err != nil {
			return cliError("plan", err)
		}
		if !acts {
			return 3
		}
		return 0
	case events.FullCommand():
		return withStore(ctx, *eventsConfig, func(st *store.Store) error {
			acts, err := st.RecentActivity(ctx, *eventsLimit, time.Now().Add(-*eventsSince))
			if err != nil {
				return err
			}
			if *eventsOutput == "json" {
				return report.WriteActivityJSON(os.Stdout, acts, *eventsDetails)
			}
			return report.WriteActivity(os.Stdout, acts, time.Local, *eventsDetails)
		})
	case pause.FullCommand():
		return withStore(ctx, *pauseConfig, func(st *store.Store) error { return st.SetPaused(ctx, true, *pauseReason) })
	case resume.FullCommand():
		return withStore(ctx, *resumeConfig, func(st *store.Store) error { return st.SetPaused(ctx, false, "") })
	case clear.FullCommand():
		return withStore(ctx, *clearConfig, func(st *store.Store) error {
			c, err := st.ClearTarget(ctx, store.Clear{Target: *clearTarget, Remediation: *clearRemediation, By: *clearBy, Reason: *clearReason})
			if err == nil {
				report.WriteCleared(os.Stdout, *clearTarget, c)
			}
			return err
		})
	case nodes.FullCommand():
		silentAfter := policy.DefaultSilentAfter
		if *nodesConfig != "" {
			if cfg, err := loadConfig(*nodesConfig); err == nil {
				silentAfter = cfg.Node.SilentAfter.D()
			}
		}
		return withStore(ctx, *nodesConfig, func(st *store.Store) error {
			list, err := st.Nodes(ctx)
			if err != nil {
				return err
			}
			if *nodesOutput == "json" {
				return report.WriteNodesJSON(os.Stdout, list, silentAfter)
			}
			return report.WriteNodes(os.Stdout, list, silentAfter)
		})
	case nodeAdd.FullCommand():
		return withStoreURL(ctx, *nodeAddConfig, func(st *store.Store, url string) error {
			e, err := st.Enrol(ctx, *nodeAddName, *nodeAddWebhook, url)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "role %s can reach only %s; give the node this database URL (SELFHEAL_DATABASE_URL), it is not shown again:\n", e.Role,
				map[bool]string{true: "what ingestion needs", false: "node " + strings.ToLower(*nodeAddName) + "'s jobs and audit rows"}[*nodeAddWebhook])
			fmt.Println(e.DSN)
			return nil
		})
	}
	return 0
}

// checkConfigFile is `selfheal check-config`: exit 1 on an error, the
// warnings on standard error (or everything as JSON on standard output).
func checkConfigFile(path, output string) int {
	res := report.ConfigCheck{File: path}
	cfg, err := loadConfig(path)
	if err == nil {
		var warnings []string
		if _, warnings, err = server.Credentials(cfg); err == nil {
			res.Valid, res.Remediations = true, len(cfg.Remediations)
			res.Warnings = append(append(warnings, cfg.Advice(action.ThisHost())...), policy.UnreadEnvironment(os.Getenv)...)
		} else {
			err = fmt.Errorf("%s: %w", path, err)
		}
	}
	if err != nil {
		// One error a line: the loader reports every problem it found.
		res.Errors = strings.Split(err.Error(), "\n")
	}
	if output == "json" {
		if err := report.WriteConfigCheckJSON(os.Stdout, res); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	} else {
		for _, e := range res.Errors {
			fmt.Fprintln(os.Stderr, e)
		}
		for _, w := range res.Warnings {
			fmt.Fprintf(os.Stderr, "%s: warning: %s\n", path, w)
		}
		if res.Valid {
			fmt.Printf("%s: OK (%d remediations)\n", path, res.Remediations)
		}
	}
	if !res.Valid {
		return 1
	}
	return 0
}

// loadConfig reads the file and lets the environment override it.
func loadConfig(path string) (*policy.Config, error) {
	cfg, err := policy.Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: name the configuration with --config.file=PATH", err)
	}
	if err != nil {
		return nil, err
	}
	if err := cfg.ApplyEnvironment(os.Getenv); err != nil {
		return nil, err
	}
	return cfg, nil
}

// withStore opens the database named by SELFHEAL_DATABASE_URL or, failing
// that, by the configuration file, and runs f.
func withStore(ctx context.Context, configFile string, f func(*store.Store) error) int {
	return withStoreURL(ctx, configFile, func(st *store.Store, _ string) error { return f(st) })
}

// withStoreURL is withStore for commands that need the database URL too.
func withStoreURL(ctx context.Context, configFile string, f func(*store.Store, string) error) int {
	url := os.Getenv(policy.EnvDatabaseURL)
	if url == "" && configFile != "" {
		cfg, err := loadConfig(configFile)
		if err != nil {
			return cliError("", err)
		}
		url = cfg.DatabaseURL
	}
	if url == "" {
		return cliError("", errors.New("no database: set "+policy.EnvDatabaseURL+" or pass --config.file"))
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err := store.Open(ctx, url, store.Options{MaxConns: 2})
	if err != nil {
		return cliError("", fmt.Errorf("cannot open the database: %w", err))
	}
	defer st.Close()
	if err := f(st, url); err != nil && !errors.Is(err, context.Canceled) {
		return cliError("", err)
	}
	return 0
}

func runSimulate(ctx context.Context, name string, labelArgs, annotationArgs []string, resolved bool, startsAt, webhookURL, amURL, amHTTP string) error {
	client, err := alertmanagerClient(amHTTP)
	if err != nil {
		return err
	}
	labels, err := simulate.ParseLabels(labelArgs)
	if err != nil {
		return err
	}
	labels["alertname"] = name
	// The shipped rule's own labels (category, severity), as a real alert
	// of that name carries them: the routing sends selfheal only category
	// A–D. A label given on the command line wins.
	static, err := alerting.StaticLabels(name)
	if err != nil {
		return err
	}
	var added []string
	for k, v := range static {
		if _, ok := labels[k]; !ok {
			labels[k] = v
			added = append(added, k+"="+v)
		}
	}
	sort.Strings(added)
	annotations, err := simulate.ParseLabels(annotationArgs)
	if err != nil {
		return fmt.Errorf("annotation: %w", err)
	}
	now := time.Now().UTC()
	start := now
	if startsAt != "" {
		if start, err = time.Parse(time.RFC3339Nano, startsAt); err != nil {
			return fmt.Errorf("--starts-at: %w", err)
		}
	}
	a := simulate.Alert{Labels: labels, Annotations: annotations, StartsAt: start, Resolved: resolved}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if amURL != "" {
		err = simulate.PostAlertmanager(ctx, client, amURL, a, now)
	} else {
		err = simulate.PostWebhook(ctx, webhookURL, os.Getenv(policy.EnvWebhookToken), simulate.Message(a, now))
	}
	if err != nil {
		return err
	}
	status := "firing"
	if resolved {
		status = "resolved"
	}
	fmt.Printf("sent %s %s (starts-at %s)\n", status, labelText(labels), start.Format(time.RFC3339Nano))
	if len(added) > 0 {
		fmt.Printf("  labels from the shipped rule %s: %s\n", name, strings.Join(added, ", "))
	}
	if amURL != "" && !resolved {
		// Where Alertmanager's routing sent it; it routes at once.
		var to []string
		for range 20 {
			if to, err = simulate.Receivers(ctx, client, amURL, labels); err != nil || len(to) > 0 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		switch {
		case err != nil:
			return err
		case len(to) == 0:
			fmt.Println("  Alertmanager routed it to no receiver (is it silenced or inhibited?)")
		default:
			fmt.Printf("  Alertmanager routed it to: %s\n", strings.Join(to, ", "))
		}
	}
	return nil
}

// labelText prints a label set as Prometheus does: {a="b", c="d"}, sorted.
func labelText(l map[string]string) string {
	keys := slices.Sorted(maps.Keys(l))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, l[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// alertmanagerClient is the HTTP client a command reaches Alertmanager
// with: as the http_config file says, or a plain one.
func alertmanagerClient(httpConfigFile string) (*http.Client, error) {
	if httpConfigFile == "" {
		return &http.Client{}, nil
	}
	c, _, err := commoncfg.LoadHTTPConfigFile(httpConfigFile)
	if err != nil {
		return nil, fmt.Errorf("--alertmanager.http-config.file: %w", err)
	}
	return commoncfg.NewClientFromConfig(*c, "selfheal")
}

// cliError prints a command's error as a sentence on standard error —
// commands people type answer in words, not log lines — and returns the
// exit code 1.
func cliError(command string, err error) int {
	prefix := "selfheal"
	if command != "" {
		prefix += " " + command
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", prefix, err)
	return 1
}

func exitCode(logger *slog.Logger, err error) int {
	if err == nil || errors.Is(err, context.Canceled) {
		return 0
	}
	logger.Error("selfheal failed", "err", err)
	return 1
}

// runPlan prints the plan for one alert, or for every alert firing in an
// Alertmanager, and reports whether any of them would act.
func runPlan(ctx context.Context, cfg *policy.Config, logger *slog.Logger, name string, labelArgs []string, amURL, amHTTP, output string) (bool, error) {
	var alerts []map[string]string
	switch {
	case amURL != "" && name != "":
		return false, errors.New("give an alert or --alertmanager.url, not both")
	case amURL != "":
		var err error
		client, err := alertmanagerClient(amHTTP)
		if err != nil {
			return false, err
		}
		if alerts, err = simulate.FiringAlerts(ctx, client, amURL); err != nil {
			return false, err
		}
	case name == "":
		return false, errors.New("give an alert name (and labels), or --alertmanager.url")
	default:
		labels, err := simulate.ParseLabels(labelArgs)
		if err != nil {
			return false, err
		}
		labels["alertname"] = name
		alerts = append(alerts, labels)
	}
	p, err := server.NewPlanner(ctx, cfg, logger)
	if err != nil {
		return false, err
	}
	defer p.Close()
	acts := false
	var plans []engine.Plan
	for _, labels := range alerts {
		pl, err := p.Plan(ctx, labels)
		if err != nil {
			return false, err
		}
		acts = acts || pl.Acts()
		plans = append(plans, pl)
	}
	if output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return acts, enc.Encode(plans)
	}
	for i, pl := range plans {
		if i > 0 {
			fmt.Println()
		}
		if err := report.WritePlan(os.Stdout, pl); err != nil {
			return false, err
		}
	}
	if len(plans) == 0 {
		fmt.Println("no alert is firing")
	}
	return acts, nil
}

// operator names who runs a command, for the audit trail: the user, and
// the one behind sudo.
func operator() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if name == "" {
		name = "unknown"
	}
	if su := os.Getenv("SUDO_USER"); su != "" && su != name {
		name += " (sudo by " + su + ")"
	}
	return name
}

// manPageTemplate is kingpin's man page with a .TH header man can read:
// its version on one line (kingpin puts all of --version's lines there).
func manPageTemplate(tmpl string) string {
	v := version.Version
	if v == "" {
		v = "devel"
	}
	th := fmt.Sprintf(".TH {{.App.Name}} 1 %q %q %q", version.BuildDate, "selfheal "+v+" ("+version.GetRevision()+")", "selfheal manual")
	return strings.Replace(tmpl, `.TH {{.App.Name}} 1 {{.App.Version}} "{{.App.Author}}"`, th, 1)
}
