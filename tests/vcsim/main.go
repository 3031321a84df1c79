// Command vcsim is vpoller's launcher for govmomi's vSphere simulator.
//
// Debian ships the simulator as a Go package but no command, so the project
// keeps this small main. Beyond stock vcsim it sizes the inventory from flags,
// serves TLS with a certificate rustls accepts, ties its lifetime to its
// parent (SIGTERM, SIGINT, or stdin closing) and, with -populate, fills in the
// data that stock vcsim leaves empty but vPoller methods read.
//
// Line 1 of stdout is the SDK URL; everything else goes to stderr.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

func main() {
	listen := flag.String("l", "127.0.0.1:0", "listen address (port 0 picks a free port)")
	dc := flag.Int("dc", 1, "datacenters")
	cluster := flag.Int("cluster", 1, "clusters per datacenter")
	host := flag.Int("host", 3, "hosts per cluster")
	standalone := flag.Int("standalone", 1, "standalone hosts per datacenter")
	vm := flag.Int("vm", 2, "VMs per standalone host and per cluster root pool")
	ds := flag.Int("ds", 1, "local datastores per datacenter")
	pool := flag.Int("pool", 0, "child resource pools per cluster")
	pg := flag.Int("pg", 1, "distributed portgroups per datacenter")
	folder := flag.Int("folder", 0, "datacenters inside sub-folders")
	app := flag.Int("app", 0, "vApps per cluster")
	autostart := flag.Bool("autostart", true, "power on the VMs")
	esx := flag.Bool("esx", false, "simulate a single ESXi host")
	useTLS := flag.Bool("tls", false, "serve https with a freshly generated ECDSA P-256 certificate")
	certOut := flag.String("tls-cert-out", "", "write the server certificate as PEM to this file")
	username := flag.String("username", "", "accept only this user name (with -password)")
	password := flag.String("password", "", "accept only this password (with -username)")
	idle := flag.Duration("session-idle-timeout", 0, "expire sessions idle this long (0: never)")
	stdinExit := flag.Bool("stdinexit", false, "exit when stdin reaches EOF")
	trace := flag.Bool("trace", false, "write every SOAP request and response to stderr (tests count calls in it)")
	populate := flag.Bool("populate", true, "fill in guest data, quickStats, snapshots, alarms, perf intervals and latestEvent")
	snapshotEvery := flag.Int("snapshot-every", 10, "with -populate: snapshot on VMs whose index % N == 0")
	alarmEvery := flag.Int("alarm-every", 10, "with -populate: triggered alarm on VMs and hosts whose index % N == 1")
	eventRefresh := flag.Duration("latest-event-refresh", 100*time.Millisecond, "with -populate: how often EventManager.latestEvent is refreshed")
	methodDelay := flag.String("method-delay", "", "delay these SOAP methods, e.g. RetrievePropertiesEx:1500 (milliseconds; comma-separated)")
	flag.Parse()

	log.SetOutput(os.Stderr)
	log.SetFlags(log.Ltime | log.Lmicroseconds)

	model := simulator.VPX()
	if *esx {
		model = simulator.ESX()
	} else {
		model.Datacenter = *dc
		model.Cluster = *cluster
		model.ClusterHost = *host
		model.Host = *standalone
		model.Pool = *pool
		model.Portgroup = *pg
		model.Folder = *folder
		model.App = *app
	}
	model.Machine = *vm
	model.Datastore = *ds
	model.Autostart = *autostart

	simulator.SessionIdleTimeout = *idle
	if *methodDelay != "" {
		delays, err := parseMethodDelays(*methodDelay)
		if err != nil {
			log.Fatalf("vcsim: -method-delay: %v", err)
		}
		model.DelayConfig.MethodDelay = delays
	}

	started := time.Now()
	if err := model.Create(); err != nil {
		log.Fatalf("vcsim: creating the model: %v", err)
	}
	created := time.Since(started)

	if *populate {
		p := populator{snapshotEvery: *snapshotEvery, alarmEvery: *alarmEvery, content: model.ServiceContent}
		if err := p.run(); err != nil {
			log.Fatalf("vcsim: populating the model: %v", err)
		}
	}
	log.Printf("vcsim: pid %d, %d VMs, %d hosts, created in %s, ready in %s",
		os.Getpid(), len(simulator.Map.All("VirtualMachine")), len(simulator.Map.All("HostSystem")),
		created.Round(time.Millisecond), time.Since(started).Round(time.Millisecond))

	model.Service.Listen = &url.URL{Host: *listen}
	simulator.Trace = *trace
	if *username != "" || *password != "" {
		if *username == "" || *password == "" {
			log.Fatalf("vcsim: -username and -password go together")
		}
		model.Service.Listen.User = url.UserPassword(*username, *password)
	}

	if *useTLS {
		cert, err := newServerCertificate()
		if err != nil {
			log.Fatalf("vcsim: generating a certificate: %v", err)
		}
		if *certOut != "" {
			block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
			if err := ioutil.WriteFile(*certOut, block, 0o644); err != nil {
				log.Fatalf("vcsim: writing %s: %v", *certOut, err)
			}
		}
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}

	server := model.Service.NewServer()
	if *populate && !*esx {
		go refreshLatestEvent(*eventRefresh)
	}

	sdk := *server.URL
	sdk.User = nil
	fmt.Println(sdk.String())

	stop := make(chan string, 2)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() { stop <- (<-signals).String() }()
	if *stdinExit {
		go func() {
			_, _ = io.Copy(ioutil.Discard, os.Stdin)
			stop <- "stdin closed"
		}()
	}

	reason := <-stop
	log.Printf("vcsim: stopping (%s)", reason)
	server.Close()
	model.Remove()
}

// newServerCertificate makes a self-signed leaf that rustls will take as a
// pinned trust anchor: CA:FALSE, serverAuth, SANs for loopback.
func newServerCertificate() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	template := x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "vcsim", Organization: []string{"vpoller test bed"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, &template, &template, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// refreshLatestEvent copies the newest event into EventManager.latestEvent,
// which stock vcsim never sets.
func refreshLatestEvent(every time.Duration) {
	em := simulator.Map.EventManager()
	for range time.Tick(every) {
		simulator.Map.WithLock(em, func() {
			body, ok := em.QueryEvents(nil, &types.QueryEvents{
				This:   em.Self,
				Filter: types.EventFilterSpec{MaxCount: 1},
			}).(*methods.QueryEventsBody)
			if ok && body.Res != nil && len(body.Res.Returnval) > 0 {
				em.LatestEvent = body.Res.Returnval[0]
			}
		})
	}
}

type populator struct {
	content       types.ServiceContent
	snapshotEvery int
	alarmEvery    int
}

func (p populator) run() error {
	vms := sortedEntities("VirtualMachine")
	hosts := sortedEntities("HostSystem")

	vmAlarm, hostAlarm := p.putAlarms()
	now := time.Now()

	for i, e := range vms {
		vm := e.(*simulator.VirtualMachine)
		if vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
			fillGuest(vm, i)
			fillQuickStats(vm, i)
		}
		if p.snapshotEvery > 0 && i%p.snapshotEvery == 0 {
			if err := takeSnapshot(vm); err != nil {
				return fmt.Errorf("snapshot of %s: %v", vm.Name, err)
			}
		}
		if p.alarmEvery > 0 && i%p.alarmEvery == 1 {
			vm.TriggeredAlarmState = append(vm.TriggeredAlarmState,
				alarmState(vmAlarm, vm.Self, types.ManagedEntityStatusRed, now))
			vm.OverallStatus = types.ManagedEntityStatusRed
		}
		linkVMToNetworks(vm)
	}

	// Stock vcsim records only the last host's mount; rebuild in host order.
	for _, e := range simulator.Map.All("Datastore") {
		e.(*simulator.Datastore).Host = nil
	}
	for i, e := range hosts {
		host := e.(*simulator.HostSystem)
		if p.alarmEvery > 0 && i%p.alarmEvery == 1 {
			host.TriggeredAlarmState = append(host.TriggeredAlarmState,
				alarmState(hostAlarm, host.Self, types.ManagedEntityStatusYellow, now))
			host.OverallStatus = types.ManagedEntityStatusYellow
		}
		mountDatastores(host)
		linkHostToNetworks(host)
	}

	for _, e := range simulator.Map.All("Datacenter") {
		dc := e.(*simulator.Datacenter)
		dc.Network = uniqueRefs(dc.Network)
	}

	if pm, ok := simulator.Map.Get(*p.content.PerfManager).(*simulator.PerformanceManager); ok {
		pm.HistoricalInterval = []types.PerfInterval{
			{Key: 1, SamplingPeriod: 300, Name: "Past day", Length: 86400, Level: 1, Enabled: true},
			{Key: 2, SamplingPeriod: 1800, Name: "Past week", Length: 604800, Level: 1, Enabled: true},
			{Key: 3, SamplingPeriod: 7200, Name: "Past month", Length: 2592000, Level: 1, Enabled: true},
			{Key: 4, SamplingPeriod: 86400, Name: "Past year", Length: 31536000, Level: 1, Enabled: true},
		}
	}
	return nil
}

// sortedEntities lists the objects of a kind in moref order (vm-9 before
// vm-10), so that "every Nth VM" picks the same VMs on every start.
func sortedEntities(kind string) []mo.Entity {
	all := simulator.Map.All(kind)
	sort.Slice(all, func(i, j int) bool {
		a, b := all[i].Entity().Self.Value, all[j].Entity().Self.Value
		na, ea := trailingNumber(a)
		nb, eb := trailingNumber(b)
		if ea == nil && eb == nil && na != nb {
			return na < nb
		}
		return a < b
	})
	return all
}

func trailingNumber(moref string) (int, error) {
	return strconv.Atoi(moref[strings.LastIndex(moref, "-")+1:])
}

func (p populator) putAlarms() (vmAlarm, hostAlarm types.ManagedObjectReference) {
	root := p.content.RootFolder
	put := func(value, name, description string) types.ManagedObjectReference {
		alarm := &mo.Alarm{}
		alarm.Self = types.ManagedObjectReference{Type: "Alarm", Value: value}
		alarm.Info = types.AlarmInfo{
			AlarmSpec: types.AlarmSpec{
				Name:        name,
				SystemName:  "",
				Description: description,
				Enabled:     true,
			},
			Key:              value,
			Alarm:            alarm.Self,
			Entity:           root,
			LastModifiedTime: time.Now(),
			LastModifiedUser: "vcsim",
		}
		simulator.Map.Put(alarm)
		return alarm.Self
	}
	return put("alarm-1", "Virtual machine CPU usage", "Default alarm to monitor virtual machine CPU usage"),
		put("alarm-2", "Host connection and power state", "Default alarm to monitor host connection and power state")
}

func alarmState(alarm, entity types.ManagedObjectReference, status types.ManagedEntityStatus, at time.Time) types.AlarmState {
	return types.AlarmState{
		Key:           alarm.Value + "." + entity.Value,
		Entity:        entity,
		Alarm:         alarm,
		OverallStatus: status,
		Time:          at,
		Acknowledged:  types.NewBool(false),
	}
}

func fillGuest(vm *simulator.VirtualMachine, i int) {
	hostName := strings.ReplaceAll(strings.ToLower(vm.Name), "_", "-") + ".vcsim.test"
	ip := fmt.Sprintf("10.%d.%d.%d", i/62500, i/250%250, i%250+1)
	const gib = int64(1) << 30

	guest := vm.Guest
	guest.HostName = hostName
	guest.IpAddress = ip
	guest.GuestState = "running"
	guest.ToolsStatus = types.VirtualMachineToolsStatusToolsOk
	guest.ToolsRunningStatus = string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
	guest.ToolsVersionStatus = "guestToolsCurrent"
	guest.ToolsVersionStatus2 = "guestToolsCurrent"
	guest.Disk = []types.GuestDiskInfo{
		{DiskPath: "/", Capacity: 20 * gib, FreeSpace: 20*gib - int64(i%17+1)*gib/2, FilesystemType: "ext4"},
		{DiskPath: "/var", Capacity: 10 * gib, FreeSpace: 10*gib - int64(i%7+1)*gib/2, FilesystemType: "ext4"},
	}
	if len(guest.Net) > 0 {
		nic := &guest.Net[0]
		nic.IpAddress = []string{ip}
		nic.IpConfig = &types.NetIpConfigInfo{
			IpAddress: []types.NetIpConfigInfoIpAddress{{IpAddress: ip, PrefixLength: 8, State: "preferred"}},
		}
		if nic.Network == "" && len(vm.Network) > 0 {
			nic.Network = entityName(vm.Network[0])
		}
	}

	summary := vm.Summary.Guest
	summary.HostName = hostName
	summary.IpAddress = ip
	summary.ToolsStatus = guest.ToolsStatus
	summary.ToolsRunningStatus = guest.ToolsRunningStatus
	summary.ToolsVersionStatus = guest.ToolsVersionStatus
	summary.ToolsVersionStatus2 = guest.ToolsVersionStatus2
}

func fillQuickStats(vm *simulator.VirtualMachine, i int) {
	n := int32(i)
	stats := &vm.Summary.QuickStats
	stats.OverallCpuUsage = 10 + (n*37)%990
	stats.OverallCpuDemand = stats.OverallCpuUsage + 5
	stats.GuestMemoryUsage = 100 + (n*53)%900
	stats.HostMemoryUsage = stats.GuestMemoryUsage + 64
	stats.UptimeSeconds = 3600 + n*60
	stats.GuestHeartbeatStatus = types.ManagedEntityStatusGreen
}

func takeSnapshot(vm *simulator.VirtualMachine) error {
	vm.CreateSnapshotTask(&types.CreateSnapshot_Task{
		This:        vm.Self,
		Name:        "vcsim-snapshot-1",
		Description: "created by the vcsim launcher",
	})
	if vm.Snapshot == nil || vm.Snapshot.CurrentSnapshot == nil {
		return fmt.Errorf("CreateSnapshot_Task left no current snapshot")
	}
	vm.RootSnapshot = []types.ManagedObjectReference{*vm.Snapshot.CurrentSnapshot}
	return nil
}

// networkOf returns the Network part of a standard network or a DV portgroup.
func networkOf(ref types.ManagedObjectReference) *mo.Network {
	switch n := simulator.Map.Get(ref).(type) {
	case *mo.Network:
		return n
	case *simulator.DistributedVirtualPortgroup:
		return &n.Network
	}
	return nil
}

func entityName(ref types.ManagedObjectReference) string {
	if e, ok := simulator.Map.Get(ref).(mo.Entity); ok {
		return e.Entity().Name
	}
	return ""
}

func linkVMToNetworks(vm *simulator.VirtualMachine) {
	for _, ref := range vm.Network {
		if n := networkOf(ref); n != nil {
			n.Vm = addRef(n.Vm, vm.Self)
		}
	}
}

func linkHostToNetworks(host *simulator.HostSystem) {
	for _, ref := range host.Network {
		if n := networkOf(ref); n != nil {
			n.Host = addRef(n.Host, host.Self)
		}
	}
}

// mountDatastores records the host in Datastore.host, where stock vcsim keeps
// only the last host's mount.
func mountDatastores(host *simulator.HostSystem) {
	for _, ref := range host.Datastore {
		ds, ok := simulator.Map.Get(ref).(*simulator.Datastore)
		if !ok {
			continue
		}
		mounted := false
		for _, m := range ds.Host {
			mounted = mounted || m.Key == host.Self
		}
		if mounted {
			continue
		}
		ds.Host = append(ds.Host, types.DatastoreHostMount{
			Key: host.Self,
			MountInfo: types.HostMountInfo{
				Path:       ds.Info.GetDatastoreInfo().Url,
				AccessMode: string(types.HostMountModeReadWrite),
				Mounted:    types.NewBool(true),
				Accessible: types.NewBool(true),
			},
		})
	}
}

func addRef(refs []types.ManagedObjectReference, ref types.ManagedObjectReference) []types.ManagedObjectReference {
	for _, r := range refs {
		if r == ref {
			return refs
		}
	}
	return append(refs, ref)
}

func uniqueRefs(refs []types.ManagedObjectReference) []types.ManagedObjectReference {
	var out []types.ManagedObjectReference
	for _, r := range refs {
		out = addRef(out, r)
	}
	return out
}

// parseMethodDelays reads "Method:ms,Method:ms" into the simulator's delay map.
func parseMethodDelays(text string) (map[string]int, error) {
	delays := map[string]int{}
	for _, entry := range strings.Split(text, ",") {
		name, ms, found := strings.Cut(strings.TrimSpace(entry), ":")
		if !found {
			return nil, fmt.Errorf("%q is not Method:milliseconds", entry)
		}
		n, err := strconv.Atoi(ms)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q: the delay is not a number of milliseconds", entry)
		}
		delays[name] = n
	}
	return delays, nil
}
