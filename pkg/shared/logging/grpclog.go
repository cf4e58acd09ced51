package logging

import (
	"fmt"

	"google.golang.org/grpc/grpclog"
)

// GRPCLogger adapts l to grpc-go's LoggerV2. grpc-go's info chatter goes to debug, so the default info level shows
// only warnings and errors from the library.
func GRPCLogger(l Logger) grpclog.LoggerV2 { return grpcLogger{l: l.With(FieldComponent, "grpc")} }

type grpcLogger struct{ l Logger }

func (g grpcLogger) Info(args ...any)                    { g.l.Debug(fmt.Sprint(args...)) }
func (g grpcLogger) Infoln(args ...any)                  { g.l.Debug(fmt.Sprint(args...)) }
func (g grpcLogger) Infof(format string, args ...any)    { g.l.Debug(fmt.Sprintf(format, args...)) }
func (g grpcLogger) Warning(args ...any)                 { g.l.Warn(fmt.Sprint(args...)) }
func (g grpcLogger) Warningln(args ...any)               { g.l.Warn(fmt.Sprint(args...)) }
func (g grpcLogger) Warningf(format string, args ...any) { g.l.Warn(fmt.Sprintf(format, args...)) }
func (g grpcLogger) Error(args ...any)                   { g.l.Error(fmt.Sprint(args...)) }
func (g grpcLogger) Errorln(args ...any)                 { g.l.Error(fmt.Sprint(args...)) }
func (g grpcLogger) Errorf(format string, args ...any)   { g.l.Error(fmt.Sprintf(format, args...)) }
func (g grpcLogger) Fatal(args ...any)                   { g.l.Error(fmt.Sprint(args...)) }
func (g grpcLogger) Fatalln(args ...any)                 { g.l.Error(fmt.Sprint(args...)) }
func (g grpcLogger) Fatalf(format string, args ...any)   { g.l.Error(fmt.Sprintf(format, args...)) }
func (g grpcLogger) V(level int) bool                    { return level <= 0 && g.l.Enabled(LevelDebug) }
