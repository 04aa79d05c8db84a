// Command mkimage imports the local busybox test image (no registry needed)
// and prints its pinned image ID, for `make enable` and manual runs:
//
//	go run ./container/dockertest/cmd/mkimage
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/container/dockertest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	d, err := container.NewDocker(ctx)
	if err != nil {
		return err
	}
	defer d.Close()
	id, err := dockertest.BusyboxImage(ctx, d.Client())
	if err != nil {
		return err
	}
	fmt.Println(id)
	return nil
}
