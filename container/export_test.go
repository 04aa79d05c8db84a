package container

import (
	"context"
	"fmt"
	"time"

	"github.com/moby/moby/client"
)

// StartDetached creates and (when start is set) starts a container exactly as
// Run does, then returns without following it: the state a plugin leaves
// behind when it stops in the middle of a run.
func (d *Docker) StartDetached(ctx context.Context, spec Spec, start bool) (string, error) {
	if err := spec.validate(); err != nil {
		return "", err
	}
	name, err := containerName()
	if err != nil {
		return "", err
	}
	setup, err := d.prepareInit(ctx, spec.Image)
	if err != nil {
		return "", err
	}
	if spec.Deadline.IsZero() {
		spec.Deadline = time.Now().Add(spec.Timeout)
	}
	created, err := d.cli.ContainerCreate(ctx, d.createOptions(name, spec.Image, &spec, setup))
	if err != nil {
		return "", fmt.Errorf("creating: %w", err)
	}
	if err := d.copyFiles(ctx, created.ID, &spec); err != nil {
		return created.ID, err
	}
	if start {
		if _, err := d.cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
			return created.ID, fmt.Errorf("starting: %w", err)
		}
	}
	return created.ID, nil
}

// LabelManaged lets the external tests check the label the runner sets.
const LabelManaged = labelManaged

// FollowLogs follows the log of container id as Run and Attach do, until
// stop: a follower that goes away while the container keeps printing.
func (d *Docker) FollowLogs(ctx context.Context, id string, w LineWriter) (stop func(), err error) {
	logs, err := d.openLogs(ctx, id, time.Time{}, true, w)
	if err != nil {
		return nil, err
	}
	return logs.stop, nil
}
