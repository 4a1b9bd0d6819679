package release

import (
	"encoding/json"
	"errors"
	"fmt"
	"go/version"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, its continuation lines joined.
type instruction struct {
	line int    // 1-based line where it starts
	cmd  string // upper case: FROM, RUN, COPY, ARG, ...
	args string
}

// parseDockerfile returns the file's first line and its instructions. Comment
// lines are dropped, inside continuations too, as Docker does.
func parseDockerfile(t *testing.T, data string) (first string, ins []instruction) {
	t.Helper()
	lines := strings.Split(data, "\n")
	first = lines[0]
	var cur *instruction
	for i, l := range lines {
		trimmed := strings.TrimSpace(l)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		cont := strings.HasSuffix(trimmed, `\`)
		trimmed = strings.TrimSpace(strings.TrimSuffix(trimmed, `\`))
		if cur == nil {
			cmd, args, _ := strings.Cut(trimmed, " ")
			cur = &instruction{line: i + 1, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		} else {
			cur.args += " " + trimmed
		}
		if !cont {
			ins = append(ins, *cur)
			cur = nil
		}
	}
	if cur != nil {
		t.Fatalf("Dockerfile:%d: the last instruction ends with a line continuation", cur.line)
	}
	return first, ins
}

// stage is one FROM and the instructions up to the next.
type stage struct {
	from  instruction
	image string // as written, --platform dropped
	name  string // the AS name, if any
	body  []instruction
}

func stages(t *testing.T, ins []instruction) []stage {
	t.Helper()
	var out []stage
	for _, in := range ins {
		if in.cmd != "FROM" {
			if len(out) == 0 {
				if in.cmd == "ARG" {
					continue // ARGs before the first FROM are allowed
				}
				t.Fatalf("Dockerfile:%d: %s before the first FROM", in.line, in.cmd)
			}
			out[len(out)-1].body = append(out[len(out)-1].body, in)
			continue
		}
		var f []string
		for _, w := range strings.Fields(in.args) {
			if !strings.HasPrefix(w, "--") {
				f = append(f, w)
			}
		}
		s := stage{from: in}
		switch {
		case len(f) == 1:
			s.image = f[0]
		case len(f) == 3 && strings.EqualFold(f[1], "AS"):
			s.image, s.name = f[0], f[2]
		default:
			t.Fatalf("Dockerfile:%d: cannot read FROM %s", in.line, in.args)
		}
		out = append(out, s)
	}
	return out
}

// cacheMounts returns the targets of a RUN's --mount=type=cache flags.
func cacheMounts(run instruction) []string {
	var targets []string
	for _, m := range regexp.MustCompile(`--mount=(\S+)`).FindAllStringSubmatch(run.args, -1) {
		kv := map[string]string{}
		for _, opt := range strings.Split(m[1], ",") {
			k, v, _ := strings.Cut(opt, "=")
			kv[k] = v
		}
		if kv["type"] == "cache" {
			targets = append(targets, kv["target"])
		}
	}
	return targets
}

// goLine is go.mod's go directive.
func goLine(t *testing.T, root string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(data)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	return string(m[1])
}

// makeBuildLDFlags is the -ldflags value `make build` passes for the given
// version and commit (from make's dry run).
func makeBuildLDFlags(t *testing.T, root, ver, commit string) string {
	t.Helper()
	out, err := exec.Command("make", "--no-print-directory", "-n", "-C", root, "build",
		"VERSION="+ver, "COMMIT="+commit).CombinedOutput()
	if err != nil {
		t.Fatalf("make -n build: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`go build .*-ldflags "([^"]*)"`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("make -n build prints no go build -ldflags \"...\":\n%s", out)
	}
	return string(m[1])
}

func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	first, ins := parseDockerfile(t, string(data))

	// BuildKit reads the syntax directive only on the first line. An explicit
	// version, at least major.minor: `:1` alone floats over every 1.x.
	if !regexp.MustCompile(`^# syntax=docker/dockerfile:\d+\.\d+(\.\d+)?$`).MatchString(first) {
		t.Errorf("Dockerfile's first line is %q, want # syntax=docker/dockerfile:<major>.<minor>[.<patch>] (no digest)", first)
	}

	all := stages(t, ins)
	names := map[string]bool{}
	var build *stage
	for i := range all {
		s := &all[i]
		if names[s.image] {
			continue // FROM an earlier stage
		}
		if s.name != "" {
			names[s.name] = true
		}
		where := fmt.Sprintf("Dockerfile:%d: FROM %s", s.from.line, s.image)
		repo, tag, hasTag := strings.Cut(path.Base(s.image), ":")
		switch {
		case strings.Contains(s.image, "@"):
			t.Errorf("%s: a digest; none can be verified here, a release pins them (README, Release)", where)
		case strings.Contains(s.image, "$"):
			t.Errorf("%s: a variable image; pin it at an explicit tag", where)
		case !hasTag || tag == "":
			t.Errorf("%s: no tag; pin an explicit version", where)
		case tag == "latest":
			t.Errorf("%s: latest is not a version; pin an explicit one", where)
		}
		if repo == "golang" {
			// The Go image builds what go.mod asks for: the same language
			// version, at a patch release no older than the go line.
			mod := "go" + goLine(t, root)
			img := "go" + regexp.MustCompile(`^\d+\.\d+\.\d+`).FindString(tag)
			if !version.IsValid(img) || version.Lang(img) != version.Lang(mod) || version.Compare(img, mod) < 0 {
				t.Errorf("%s: tag %q is not a Go release matching go.mod's go %s: use golang:%s.N-<debian release>",
					where, tag, strings.TrimPrefix(mod, "go"), strings.TrimPrefix(version.Lang(mod), "go"))
			}
		}
		for _, in := range s.body {
			if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
				build = s
			}
		}
	}
	if build == nil {
		t.Fatal("Dockerfile: no stage runs go build")
	}
	if repo, _, _ := strings.Cut(path.Base(build.image), ":"); repo != "golang" {
		t.Errorf("Dockerfile:%d: go build runs FROM %s, want the golang image", build.from.line, build.image)
	}

	// In the build stage: COPY go.mod go.sum, then go mod download with the
	// module cache mounted, before any other file is copied; then go build
	// with both caches mounted and make build's link flags.
	var copiedMod, downloaded, argVersion, argCommit bool
	for _, in := range build.body {
		where := fmt.Sprintf("Dockerfile:%d", in.line)
		switch {
		case in.cmd == "COPY" || in.cmd == "ADD":
			f := strings.Fields(in.args)
			if slices.Equal(f[:len(f)-1], []string{"go.mod", "go.sum"}) {
				copiedMod = true
			} else if !downloaded {
				t.Errorf("%s: %s %s before go mod download: that layer must be keyed on go.mod and go.sum only", where, in.cmd, in.args)
			}
		case in.cmd == "ARG" && (in.args == "VERSION" || strings.HasPrefix(in.args, "VERSION=")):
			argVersion = true
		case in.cmd == "ARG" && (in.args == "COMMIT" || strings.HasPrefix(in.args, "COMMIT=")):
			argCommit = true
		case in.cmd == "RUN" && strings.Contains(in.args, "go mod download"):
			if !copiedMod {
				t.Errorf("%s: go mod download before COPY go.mod go.sum", where)
			}
			if !slices.Contains(cacheMounts(in), "/go/pkg/mod") {
				t.Errorf("%s: go mod download without --mount=type=cache,target=/go/pkg/mod", where)
			}
			downloaded = true
		case in.cmd == "RUN" && strings.Contains(in.args, "go build"):
			if !downloaded {
				t.Errorf("%s: go build before go mod download", where)
			}
			mounts := cacheMounts(in)
			for _, want := range []string{"/go/pkg/mod", "/root/.cache/go-build"} {
				if !slices.Contains(mounts, want) {
					t.Errorf("%s: go build without --mount=type=cache,target=%s (has %q)", where, want, mounts)
				}
			}
			if !argVersion || !argCommit {
				t.Errorf("%s: go build before ARG VERSION and ARG COMMIT", where)
			}
			m := regexp.MustCompile(`-ldflags "([^"]*)"`).FindStringSubmatch(in.args)
			if m == nil {
				t.Fatalf("%s: go build without -ldflags \"...\"", where)
			}
			got := strings.NewReplacer("${VERSION}", testVersion, "${COMMIT}", testCommit).Replace(m[1])
			if want := makeBuildLDFlags(t, root, testVersion, testCommit); got != want {
				t.Errorf("%s: go build -ldflags %q (with VERSION=%s COMMIT=%s), make build links with %q",
					where, got, testVersion, testCommit, want)
			}
		}
	}
	if !downloaded {
		t.Error("Dockerfile: the build stage runs no go mod download")
	}
}

// ignoreRule is one .dockerignore line, matched as Docker matches it
// (github.com/moby/patternmatcher): the pattern, cleaned and without a
// leading slash, matches a path or any of its parent directories; `*` and `?`
// stay within a path element, `**` spans any number of them; the last rule
// that matches decides, `!` letting a path back in.
type ignoreRule struct {
	text   string
	re     *regexp.Regexp
	negate bool
}

func parseDockerignore(t *testing.T, data string) []ignoreRule {
	t.Helper()
	var rules []ignoreRule
	for i, l := range strings.Split(data, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		r := ignoreRule{text: l}
		if strings.HasPrefix(l, "!") {
			r.negate, l = true, strings.TrimSpace(l[1:])
		}
		l = strings.TrimPrefix(filepath.ToSlash(filepath.Clean(l)), "/")
		if strings.ContainsAny(l, `[\`) {
			t.Fatalf(".dockerignore:%d: %q: character classes and escapes are not supported by this test's matcher", i+1, r.text)
		}
		var re strings.Builder
		for j := 0; j < len(l); j++ {
			switch {
			case strings.HasPrefix(l[j:], "**/"):
				re.WriteString("(.*/)?")
				j += 2
			case strings.HasPrefix(l[j:], "**"):
				re.WriteString(".*")
				j++
			case l[j] == '*':
				re.WriteString("[^/]*")
			case l[j] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(l[j : j+1]))
			}
		}
		r.re = regexp.MustCompile("^" + re.String() + "$")
		rules = append(rules, r)
	}
	return rules
}

// ignored reports whether Docker leaves the slash-separated path p out of the build context.
func ignored(rules []ignoreRule, p string) bool {
	out := false
	for _, r := range rules {
		for prefix := p; ; prefix = path.Dir(prefix) {
			if r.re.MatchString(prefix) {
				out = !r.negate
				break
			}
			if !strings.Contains(prefix, "/") {
				break
			}
		}
	}
	return out
}

// buildFiles is every file `go build ./cmd/controller` reads, for any target
// platform, relative to root: go.mod, go.sum, and the module's non-test
// source files of every package the binary imports.
func buildFiles(t *testing.T, root string) map[string]bool {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-json", "./cmd/controller")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			err = fmt.Errorf("%w\n%s", err, exit.Stderr)
		}
		t.Fatalf("go list -deps ./cmd/controller: %v", err)
	}
	need := map[string]bool{"go.mod": true, "go.sum": true}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p struct {
			Dir    string
			Module *struct{ Main bool }
			// Every file kind go build may read, and those other platforms' builds read.
			GoFiles, CgoFiles, IgnoredGoFiles, IgnoredOtherFiles, CFiles, CXXFiles, HFiles,
			SFiles, SysoFiles, EmbedFiles []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list -json: %v", err)
		}
		if p.Module == nil || !p.Module.Main {
			continue
		}
		rel, err := filepath.Rel(root, p.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, files := range [][]string{p.GoFiles, p.CgoFiles, p.IgnoredGoFiles, p.IgnoredOtherFiles,
			p.CFiles, p.CXXFiles, p.HFiles, p.SFiles, p.SysoFiles, p.EmbedFiles} {
			for _, f := range files {
				if !strings.HasSuffix(f, "_test.go") {
					need[filepath.ToSlash(filepath.Join(rel, f))] = true
				}
			}
		}
	}
	if len(need) < 10 {
		t.Fatalf("go list found only %d files for ./cmd/controller: %v", len(need), need)
	}
	return need
}

func TestDockerignore(t *testing.T) {
	root := repoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	rules := parseDockerignore(t, string(data))
	need := buildFiles(t, root)
	need["LICENSE"] = true // not read by go build: the image ships it (/licenses/LICENSE)

	for p := range need {
		if ignored(rules, p) {
			t.Errorf(".dockerignore leaves out %s, which go build ./cmd/controller reads: let its directory in with !%s",
				p, path.Dir(p))
		}
	}
	// What must stay out whatever else changes; .git and .cache are not walked.
	for _, p := range []string{".git", ".git/HEAD", ".cache/tools/bin/helm", "bin/leasecron", "dist/SHA256SUMS",
		"test/release/doc.go", "test/e2e/doc.go", "internal/testenv/testenv.go", "pkg/jobs/scheduler_test.go",
		"pkg/model/testdata/fuzz/FuzzParseDSN/x", "leasecron.db", "README.md"} {
		if !ignored(rules, p) {
			t.Errorf(".dockerignore sends %s to docker build; go build does not need it", p)
		}
	}
	sent := 0
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case rel == ".git" || rel == ".cache": // checked above; .cache may be a link
			if d.IsDir() {
				return filepath.SkipDir
			}
		case d.IsDir() || ignored(rules, rel):
		case !need[rel]:
			t.Errorf(".dockerignore sends %s to docker build, but go build ./cmd/controller does not read it: leave it out", rel)
		default:
			sent++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("build context: %d files, all needed (%d needed)", sent, len(need))
}
