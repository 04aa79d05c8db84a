package patch

import (
	"fmt"
	"strings"

	"github.com/flant/flant_gitops/gitwatch"
)

// scissorsLine is git's cut line: after "<comment char> " and it, git
// ignores the rest of a message (wt_status_locate_end).
const scissorsLine = "------------------------ >8 ------------------------"

// CheckMessage refuses a caller's commit message that could pass for the
// plugin's own trailers: the plugin appends its trailers (keys, and always
// the target trailers gitwatch.TrailerRepository and gitwatch.TrailerBranch)
// as the message's last paragraph, which is where git reads trailers.
// Refused are
//
//   - a line git interpret-trailers would read as one of those trailers:
//     the key in any case, then blanks and a separator (':' by default,
//     '=' or any other with trailer.separators); also when indented, so
//     that it cannot ride on a continuation line;
//   - a line "---" (followed by a blank or nothing): git reads it as the end
//     of the message and the start of a patch, so the plugin's paragraph
//     after it would not be read and lines above it would;
//   - git's scissors line, after which git ignores the rest.
//
// The error names the line and says what to change.
func CheckMessage(msg string, keys ...string) error {
	keys = append([]string{gitwatch.TrailerRepository, gitwatch.TrailerBranch}, keys...)
	for i, line := range strings.Split(msg, "\n") {
		n := i + 1
		if strings.HasPrefix(line, "---") && (len(line) == 3 || isCSpace(line[3])) {
			return fmt.Errorf("line %d starts with %q, which git reads as the end of the message (the plugin's trailers after it would be hidden): remove the line or indent it", n, "---")
		}
		if strings.Contains(line, scissorsLine) {
			return fmt.Errorf("line %d holds git's scissors line %q, after which git ignores the rest of the message (the plugin's trailers included): remove it", n, scissorsLine)
		}
		if key := trailerKey(line, keys); key != "" {
			return fmt.Errorf("line %d reads as a %s trailer, which only the plugin writes (git would report it as the plugin's): reword the line, for example without the separator after %q",
				n, key, strings.TrimLeft(line, " \t")[:len(key)])
		}
	}
	return nil
}

// trailerKey answers which of keys line would be read as by git (see
// CheckMessage), or "".
func trailerKey(line string, keys []string) string {
	t := strings.TrimLeft(line, " \t")
	for _, key := range keys {
		if len(t) < len(key) || !strings.EqualFold(t[:len(key)], key) {
			continue
		}
		rest := t[len(key):]
		if rest != "" && isTokenByte(rest[0]) {
			continue // a longer key
		}
		rest = strings.TrimLeft(rest, " \t")
		if rest == "" || isTokenByte(rest[0]) && rest[0] != '-' {
			continue // no separator: git reads no trailer
		}
		return key
	}
	return ""
}

func isTokenByte(c byte) bool {
	return c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// isCSpace is C's isspace, as git's divider check uses it.
func isCSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}
