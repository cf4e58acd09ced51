package serve

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// OnSIGHUP calls reload, on a goroutine of its own, each time the process receives SIGHUP, until ctx is done or
// stop is called. stop ends that goroutine and waits for it, then gives SIGHUP back its default action (ending the
// process); until then a SIGHUP that arrives after ctx is done, during shutdown, is caught and ignored. Call stop on
// the way out: defer serve.OnSIGHUP(ctx, reload)().
func OnSIGHUP(ctx context.Context, reload func()) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-hup:
				reload()
			case <-ctx.Done():
				return
			case <-quit:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			<-done
			signal.Stop(hup)
		})
	}
}

// OnRepeatedSignal calls fn, on a goroutine of its own, each time one of sigs arrives after ctx is done: with ctx
// from signal.NotifyContext, that is a second SIGTERM, an operator insisting on a faster shutdown. The signals are
// caught only from the moment ctx is done, so the signal that ended ctx never counts. stop ends the goroutine, waits
// for it and stops catching the signals for fn (whatever else catches them, such as NotifyContext, still does).
// Call stop on the way out: defer serve.OnRepeatedSignal(ctx, fn, syscall.SIGTERM)().
func OnRepeatedSignal(ctx context.Context, fn func(), sigs ...os.Signal) (stop func()) {
	ch := make(chan os.Signal, 1)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-ctx.Done():
		case <-quit:
			return
		}
		signal.Notify(ch, sigs...)
		defer signal.Stop(ch)
		for {
			select {
			case <-ch:
				fn()
			case <-quit:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			<-done
		})
	}
}
