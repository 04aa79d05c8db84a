package backend

// SSHKey lets the e2e tests (package backend_test) make an SSH key and its
// known_hosts line as the unit tests do.
var SSHKey = testSSHKey
