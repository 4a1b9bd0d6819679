package httpjob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/template"
	"unicode"
	"unicode/utf8"

	"github.com/leasecron/leasecron/pkg/jobs"
)

const (
	// snippetMax is how much of a failed response's body the error shows
	// at most: its first KiB.
	snippetMax = 1024
	// messageMax keeps a failure's text within what the ledger stores of
	// it: the body snippet is shortened so that the whole text, status
	// line included, is recorded.
	messageMax = jobs.MaxErrorLen
	// drainMax is how much of a response body is read, to be discarded,
	// before it is closed.
	drainMax = 64 << 10
	// redactedMark replaces a header value in a failure's text.
	redactedMark = "[redacted]"
)

// newClient returns w's own client: a transport of its own without idle
// connections (a slot's request is rare, and a Job replaced by a new
// definition leaves nothing open), and a redirect policy.
func newClient(w *Job) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	secret := make([]string, len(w.from))
	for i, f := range w.from {
		secret[i] = f.name
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if !w.follow {
				return http.ErrUseLastResponse // the 3xx is the answer
			}
			if len(via) >= maxRedirects {
				return fmt.Errorf("stopped after %d redirects", maxRedirects)
			}
			if !sameSite(via[0].URL, req.URL) {
				for _, n := range secret {
					req.Header.Del(n)
				}
			}
			return nil
		},
	}
}

// sameSite reports whether a redirect to to stays on from's host or one of
// its subdomains, where net/http too keeps sending credentials.
func sameSite(from, to *url.URL) bool {
	a, b := strings.ToLower(from.Hostname()), strings.ToLower(to.Hostname())
	return a == b || strings.HasSuffix(b, "."+a)
}

// Run implements jobs.Job: it sends the slot's request once, and fails
// unless the answer's status is one of the success codes. The error's text
// holds no header value, userinfo or query.
func (w *Job) Run(ctx context.Context, slot jobs.Slot) error {
	data := dataOf(slot)
	raw, err := render(w.url, data)
	if err != nil {
		return err
	}
	u, err := checkURL(raw)
	if err != nil {
		return fmt.Errorf("spec.http.url as rendered for the slot: %w", err)
	}
	where := w.method + " " + shown(u)

	hdr := make(http.Header, len(w.headers)+len(w.from)+1)
	var secrets []string
	for _, h := range w.headers {
		v, err := render(h.value, data)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		hdr.Set(h.name, v)
		secrets = append(secrets, v)
	}
	for _, f := range w.from {
		v, err := w.read(f)
		if err != nil {
			return fmt.Errorf("%s: header %s: %w", where, f.name, err)
		}
		hdr.Set(f.name, f.prefix+v)
		secrets = append(secrets, v, f.prefix+v)
	}
	hdr.Set(IdempotencyKey, slot.Key)
	// The URL's own secrets too, should an error or the receiver repeat it.
	if p, ok := u.User.Password(); ok {
		secrets = append(secrets, p)
	}
	secrets = dedupe(append(secrets, u.RawQuery))

	var body io.Reader
	if w.body != nil {
		b, err := render(w.body, data)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if b != "" {
			body = strings.NewReader(b)
		}
	}

	rctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, w.method, u.String(), body)
	if err != nil {
		return fmt.Errorf("%s: %s", where, redact(unwrapURL(err).Error(), secrets))
	}
	if host := hdr.Get("Host"); host != "" {
		req.Host = host
		hdr.Del("Host")
	}
	req.Header = hdr

	resp, err := w.client.Do(req)
	if err != nil {
		inner := unwrapURL(err)
		msg := redact(inner.Error(), secrets)
		if errors.Is(inner, context.DeadlineExceeded) && ctx.Err() == nil {
			msg = fmt.Sprintf("no answer within %s (spec.http.timeout)", w.timeout)
		}
		return &requestError{msg: where + ": " + msg, err: inner}
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainMax))
		_ = resp.Body.Close()
	}()
	if w.success[resp.StatusCode] {
		return nil
	}

	head := fmt.Sprintf("%s: status %d", where, resp.StatusCode)
	if text := http.StatusText(resp.StatusCode); text != "" {
		head += " " + text
	}
	if loc := resp.Header.Get("Location"); loc != "" && !w.follow && resp.StatusCode/100 == 3 {
		to := loc
		if lu, err := u.Parse(loc); err == nil {
			to = shown(lu)
		}
		head += fmt.Sprintf(" (redirect to %s not followed: set spec.http.followRedirects to follow it)", redact(to, secrets))
	}
	budget := min(snippetMax, messageMax-len(head)-len(": "))
	longest := 0
	for _, s := range secrets {
		longest = max(longest, len(s))
	}
	var snippet string
	if budget > 0 {
		// Read past the budget by the longest secret, so that a secret
		// that starts inside the snippet is seen, and redacted, whole.
		b, _ := io.ReadAll(io.LimitReader(resp.Body, int64(budget+longest+utf8.UTFMax)))
		snippet = snip(b, budget, secrets)
	}
	if snippet != "" {
		head += ": " + snippet
	}
	return &requestError{msg: head}
}

// requestError is a failed delivery. Its text is redacted; it wraps the
// transport's own error, if any, for errors.Is.
type requestError struct {
	msg string
	err error
}

func (e *requestError) Error() string { return e.msg }
func (e *requestError) Unwrap() error { return e.err }

// read returns the current value of a headersFrom header, without prefix.
func (w *Job) read(f headerFrom) (string, error) {
	if f.file != "" {
		return readFile(f.file)
	}
	v, ok := w.lookupEnv(f.env)
	if !ok {
		return "", fmt.Errorf("environment variable %s is not set", f.env)
	}
	if !validValue(v) {
		return "", fmt.Errorf("environment variable %s holds a control character (such as a newline)", f.env)
	}
	return v, nil
}

// render executes a template that was tried at Build.
func render(t *template.Template, data slotData) (string, error) {
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return "", fmt.Errorf("%s: %w", t.Name(), err)
	}
	return b.String(), nil
}

// unwrapURL returns the error inside an *url.Error, which would repeat the
// full URL, query and userinfo included.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err
	}
	return err
}

// dedupe drops empty and repeated values, and sorts the rest longest first,
// so that a value containing another is redacted whole.
func dedupe(vals []string) []string {
	out := make([]string, 0, len(vals))
	for _, v := range vals {
		if v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// redact replaces every occurrence of a secret in s.
func redact(s string, secrets []string) string {
	if len(secrets) == 0 {
		return s
	}
	pairs := make([]string, 0, 2*len(secrets))
	for _, v := range secrets {
		pairs = append(pairs, v, redactedMark)
	}
	return strings.NewReplacer(pairs...).Replace(s)
}

// snip returns the first max bytes of a response body as one line of valid
// UTF-8, with every occurrence of a secret that starts in them replaced
// (whole, even where it runs past max). b may hold more than max bytes:
// they are only looked at for secrets that straddle the cut.
func snip(b []byte, limit int, secrets []string) string {
	cut := min(limit, len(b))
	for cut > 0 && cut < len(b) && !utf8.RuneStart(b[cut]) {
		cut-- // do not split a character
	}
	// The spans of b that hold a secret.
	type span struct{ from, to int }
	var spans []span
	for _, v := range secrets {
		for i := 0; i < cut; {
			j := bytes.Index(b[i:], []byte(v))
			if j < 0 || i+j >= cut {
				break
			}
			spans = append(spans, span{i + j, i + j + len(v)})
			i += j + 1
		}
	}
	slices.SortFunc(spans, func(a, b span) int { return a.from - b.from })
	var out strings.Builder
	pos := 0
	for _, s := range spans {
		if s.from < pos { // overlaps the span redacted last: extend it
			pos = max(pos, s.to)
			continue
		}
		out.Write(b[pos:s.from])
		out.WriteString(redactedMark)
		pos = s.to
	}
	if pos < cut {
		out.Write(b[pos:cut])
	}
	text := strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(out.String(), "\uFFFD"))
	for len(text) > limit {
		_, n := utf8.DecodeLastRuneInString(text)
		text = text[:len(text)-n]
	}
	return strings.TrimSpace(text)
}
