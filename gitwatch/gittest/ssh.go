package gittest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"net"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHServer serves the Server's repositories over SSH on loopback, with a
// generated host key and one accepted client key, running the real
// git-upload-pack / git-receive-pack.
type SSHServer struct {
	root      string
	listener  net.Listener
	hostKey   ssh.Signer
	clientPEM []byte
	wg        sync.WaitGroup
}

// ServeSSH starts an SSH endpoint for the same repositories; it stops when
// the test ends.
func (s *Server) ServeSSH(t testing.TB) *SSHServer {
	t.Helper()
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("gittest: host key: %v", err)
	}
	hostKey, err := ssh.NewSignerFromKey(hostPriv)
	if err != nil {
		t.Fatalf("gittest: host key: %v", err)
	}
	clientPub, clientPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("gittest: client key: %v", err)
	}
	block, err := ssh.MarshalPrivateKey(clientPriv, "gittest client")
	if err != nil {
		t.Fatalf("gittest: client key: %v", err)
	}
	allowed, err := ssh.NewPublicKey(clientPub)
	if err != nil {
		t.Fatalf("gittest: client key: %v", err)
	}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if string(key.Marshal()) == string(allowed.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown client key")
		},
	}
	cfg.AddHostKey(hostKey)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("gittest: listen: %v", err)
	}
	ss := &SSHServer{root: s.Root, listener: l, hostKey: hostKey, clientPEM: pem.EncodeToMemory(block)}
	ss.wg.Add(1)
	go func() {
		defer ss.wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			ss.wg.Add(1)
			go func() {
				defer ss.wg.Done()
				ss.serveConn(conn, cfg)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		ss.wg.Wait()
	})
	return ss
}

// RepoURL is the ssh:// clone URL of repository name.
func (ss *SSHServer) RepoURL(name string) string {
	return "ssh://git@" + ss.listener.Addr().String() + "/" + name + ".git"
}

// KnownHosts is a known_hosts line for this server's host key.
func (ss *SSHServer) KnownHosts() []byte {
	return []byte(knownhosts.Line([]string{knownhosts.Normalize(ss.listener.Addr().String())}, ss.hostKey.PublicKey()) + "\n")
}

// ClientPrivateKey is the OpenSSH private key the server accepts.
func (ss *SSHServer) ClientPrivateKey() []byte { return ss.clientPEM }

func (ss *SSHServer) serveConn(conn net.Conn, cfg *ssh.ServerConfig) {
	defer conn.Close()
	_, chans, reqs, err := ssh.NewServerConn(conn, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, chReqs, err := nc.Accept()
		if err != nil {
			return
		}
		go ss.serveSession(ch, chReqs)
	}
}

func (ss *SSHServer) serveSession(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for req := range reqs {
		if req.Type != "exec" {
			_ = req.Reply(req.Type == "env", nil)
			continue
		}
		var payload struct{ Command string }
		if err := ssh.Unmarshal(req.Payload, &payload); err != nil {
			_ = req.Reply(false, nil)
			return
		}
		service, dir, ok := ss.parseCommand(payload.Command)
		if !ok {
			_ = req.Reply(false, nil)
			return
		}
		_ = req.Reply(true, nil)
		cmd := exec.Command("git", service, dir)
		cmd.Env = gitEnv(nil)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = ch, ch, ch.Stderr()
		status := uint32(0)
		if err := cmd.Run(); err != nil {
			status = 1
			var exitErr *exec.ExitError
			if errors.As(err, &exitErr) {
				status = uint32(exitErr.ExitCode())
			}
		}
		var buf [4]byte
		binary.BigEndian.PutUint32(buf[:], status)
		_, _ = ch.SendRequest("exit-status", false, buf[:])
		return
	}
}

// parseCommand maps "git-upload-pack '/name.git'" to the git subcommand and
// the repository directory under the root.
func (ss *SSHServer) parseCommand(command string) (service, dir string, ok bool) {
	name, arg, found := strings.Cut(command, " ")
	if !found {
		return "", "", false
	}
	switch name {
	case "git-upload-pack":
		service = "upload-pack"
	case "git-receive-pack":
		service = "receive-pack"
	default:
		return "", "", false
	}
	arg = strings.Trim(strings.TrimSpace(arg), "'\"")
	clean := path.Clean("/" + arg)
	if strings.Contains(clean, "..") {
		return "", "", false
	}
	return service, filepath.Join(ss.root, filepath.FromSlash(clean)), true
}
