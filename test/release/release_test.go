package release

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/leasecron/leasecron/internal/testenv/kube"
)

const (
	testVersion = "v9.8.7-release.test"
	testCommit  = "c0ffee1"
)

// repoRoot is the module's root: tests run in their package's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// chartMeta is the part of a Chart.yaml the release sets.
type chartMeta struct {
	Name       string `json:"name"`
	Version    string `json:"version"`
	AppVersion string `json:"appVersion"`
}

func readChartMeta(t *testing.T, data []byte) chartMeta {
	t.Helper()
	var c chartMeta
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("Chart.yaml: %v", err)
	}
	return c
}

// makeRelease runs `make release` with the test's version and commit into a
// fresh DIST, plus the extra make variables, and returns DIST.
func makeRelease(t *testing.T, vars ...string) string {
	t.Helper()
	helm, err := kube.ToolPath("helm")
	if err != nil {
		t.Fatal(err)
	}
	dist := filepath.Join(t.TempDir(), "dist")
	args := append([]string{"--no-print-directory", "-C", repoRoot(t), "release",
		"DIST=" + dist, "VERSION=" + testVersion, "COMMIT=" + testCommit}, vars...)
	cmd := exec.Command("make", args...)
	cmd.Env = append(os.Environ(), "HELM="+helm)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("make release:\n%s", out)
	return dist
}

// checkSums reads dist/SHA256SUMS, checks that it names exactly want, that
// each file has the hash it lists, and that `sha256sum -c` agrees.
func checkSums(t *testing.T, dist string, want []string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`^([0-9a-f]{64})  ([^/\s]+)$`)
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			t.Fatalf("SHA256SUMS: line %q is not sha256sum's '<hex>  <name>'", sc.Text())
		}
		f, err := os.ReadFile(filepath.Join(dist, m[2]))
		if err != nil {
			t.Fatalf("SHA256SUMS lists %s: %v", m[2], err)
		}
		if sum := sha256.Sum256(f); hex.EncodeToString(sum[:]) != m[1] {
			t.Errorf("SHA256SUMS: %s has sha256 %x, the list says %s", m[2], sum, m[1])
		}
		names = append(names, m[2])
	}
	slices.Sort(names)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(names, want) {
		t.Errorf("SHA256SUMS lists %q, want %q", names, want)
	}
	check := exec.Command("sha256sum", "--check", "--strict", "SHA256SUMS")
	check.Dir = dist
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("sha256sum --check SHA256SUMS in %s: %v\n%s", dist, err, out)
	}
}

// checkBinary checks that path is a static, stripped, executable ELF for machine.
func checkBinary(t *testing.T, path string, machine elf.Machine) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("%s is not executable (mode %v)", path, fi.Mode())
	}
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != machine || f.OSABI != elf.ELFOSABI_NONE && f.OSABI != elf.ELFOSABI_LINUX {
		t.Errorf("%s: ELF class %v, machine %v, OS ABI %v; want ELFCLASS64, %v, Linux", path, f.Class, f.Machine, f.OSABI, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a program interpreter: not a static binary (CGO must be off)", path)
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("%s imports shared libraries %q (%v): not a static binary", path, libs, err)
	}
	if f.Section(".symtab") != nil {
		t.Errorf("%s has a symbol table: not linked with make build's -s -w", path)
	}
}

// chartFile returns the named file of the chart archive at path.
func chartFile(t *testing.T, path, name string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("%s holds no %s", path, name)
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if h.Name == name {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatalf("%s: %s: %v", path, name, err)
			}
			return data
		}
	}
}

func TestMakeRelease(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(repoRoot(t), "charts", "leasecron", "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	chart := readChartMeta(t, src)

	cases := []struct {
		name         string
		vars         []string
		chartVersion string
	}{
		{"chart version from Chart.yaml", nil, chart.Version},
		{"CHART_VERSION", []string{"CHART_VERSION=0.0.1-release.test"}, "0.0.1-release.test"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dist := makeRelease(t, tc.vars...)
			bins := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
			chartTgz := fmt.Sprintf("%s-%s.tgz", chart.Name, tc.chartVersion)
			want := []string{chartTgz, "LICENSE"}
			for arch := range bins {
				want = append(want, fmt.Sprintf("leasecron_%s_linux_%s", testVersion, arch))
			}
			checkSums(t, dist, want)

			for arch, machine := range bins {
				checkBinary(t, filepath.Join(dist, fmt.Sprintf("leasecron_%s_linux_%s", testVersion, arch)), machine)
			}
			host := filepath.Join(dist, fmt.Sprintf("leasecron_%s_linux_%s", testVersion, runtime.GOARCH))
			if _, ok := bins[runtime.GOARCH]; ok && runtime.GOOS == "linux" {
				out, err := exec.Command(host, "version").CombinedOutput()
				if want := fmt.Sprintf("leasecron %s (commit %s)\n", testVersion, testCommit); err != nil || string(out) != want {
					t.Errorf("%s version = %q (%v), want %q", host, out, err, want)
				}
			} else {
				t.Logf("no release binary runs on %s/%s: version output not checked", runtime.GOOS, runtime.GOARCH)
			}

			got := readChartMeta(t, chartFile(t, filepath.Join(dist, chartTgz), chart.Name+"/Chart.yaml"))
			if got.Name != chart.Name || got.Version != tc.chartVersion || got.AppVersion != testVersion {
				t.Errorf("%s: Chart.yaml name %q version %q appVersion %q, want %q %q %q",
					chartTgz, got.Name, got.Version, got.AppVersion, chart.Name, tc.chartVersion, testVersion)
			}
			// The chart ships its CRD (helm install applies crds/ first).
			chartFile(t, filepath.Join(dist, chartTgz), chart.Name+"/crds/leasecron.io_scheduledjobs.yaml")
		})
	}
}

// TestReleaseScriptBadInput: each bad input is one line naming what is wrong
// and how to fix it, exit 2, and nothing written (DIST is not even created).
func TestReleaseScriptBadInput(t *testing.T) {
	// Every check comes before helm runs: a stand-in that does nothing will do.
	helm, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	good := map[string]string{
		"VERSION": testVersion, "COMMIT": testCommit, "HELM": helm,
		"LDFLAGS": "-s -w", "CHART_VERSION": "",
	}
	cases := []struct {
		name, key, value, want string
	}{
		{"version with a slash", "VERSION", "v1/2", "VERSION 'v1/2' is not a usable version"},
		{"empty version", "VERSION", "", "VERSION '' is not a usable version"},
		{"chart version not semver", "CHART_VERSION", "latest", "CHART_VERSION 'latest' is not a semantic version"},
		{"no helm", "HELM", "/nonexistent/helm", "helm not found at /nonexistent/helm: build it with 'make tools'"},
		{"no link flags", "LDFLAGS", "", "LDFLAGS is empty: run 'make release'"},
		{"no commit", "COMMIT", "", "COMMIT is empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dist := filepath.Join(t.TempDir(), "dist")
			cmd := exec.Command(filepath.Join(repoRoot(t), "hack", "release.sh"))
			cmd.Env = append(os.Environ(), "DIST="+dist)
			for k, v := range good {
				if k == tc.key {
					v = tc.value
				}
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Fatalf("hack/release.sh with %s=%q: %v, want exit 2\nstdout: %s\nstderr: %s", tc.key, tc.value, err, &stdout, &stderr)
			}
			lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "release: "+tc.want) || stdout.Len() > 0 {
				t.Errorf("hack/release.sh with %s=%q printed stdout %q stderr %q, want one line starting %q",
					tc.key, tc.value, &stdout, &stderr, "release: "+tc.want)
			}
			if _, err := os.Stat(dist); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("hack/release.sh with %s=%q wrote %s (%v), want nothing written", tc.key, tc.value, dist, err)
			}
		})
	}
}
