package container

import (
	"context"
	"fmt"

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
	created, err := d.cli.ContainerCreate(ctx, d.createOptions(name, spec.Image, &spec))
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
