package tributary

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	pb "github.com/tributary/tributary/clients/go/tributaryv1"
)

// Client is a connection to a gateway with its three services' generated stubs.
type Client struct {
	conn *grpc.ClientConn

	Gateway       pb.GatewayClient
	Translators   pb.TranslatorsClient
	Subscriptions pb.SubscriptionsClient
}

type options struct {
	insecure    bool
	tls         bool
	caPEM       []byte
	certPEM     []byte
	keyPEM      []byte
	serverName  string
	token       string
	dialOptions []grpc.DialOption
}

// Option configures Dial.
type Option func(*options)

// WithInsecure connects over plain TCP (no TLS): for a gateway on loopback during development.
func WithInsecure() Option { return func(o *options) { o.insecure = true } }

// WithTLS connects with TLS and trusts the CA certificates in caPEM (nil: the system's roots).
// TLS with the system's roots is also the default when no option selects a transport.
func WithTLS(caPEM []byte) Option {
	return func(o *options) { o.tls = true; o.caPEM = caPEM }
}

// WithClientCertificate presents a client certificate (mutual TLS); it implies TLS.
func WithClientCertificate(certPEM, keyPEM []byte) Option {
	return func(o *options) { o.tls = true; o.certPEM = certPEM; o.keyPEM = keyPEM }
}

// WithServerName overrides the name the server's certificate is checked against.
func WithServerName(name string) Option { return func(o *options) { o.serverName = name } }

// WithToken sends "authorization: Bearer <token>" on every call (a static token or a JWT).
// It is sent over plain TCP too when WithInsecure is given: use that on loopback only.
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithDialOptions adds gRPC dial options (interceptors, keepalive, ...).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// maxMessageBytes bounds a received message: a record larger than the gateway's batch limit
// travels alone, so this is only a guard against a runaway peer.
const maxMessageBytes = 256 << 20

// Dial makes a client of the gateway at target ("host:port", or any gRPC target). It does not
// wait for the connection: calls connect, and reconnect after the gateway restarts. ctx is only
// checked, so a cancelled context returns its error.
func Dial(ctx context.Context, target string, opts ...Option) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	var creds credentials.TransportCredentials
	switch {
	case o.insecure && o.tls:
		return nil, errors.New("tributary: WithInsecure cannot be combined with WithTLS or WithClientCertificate")
	case o.insecure:
		creds = insecure.NewCredentials()
	default:
		config := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.serverName}
		if o.caPEM != nil {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(o.caPEM) {
				return nil, errors.New("tributary: WithTLS: no certificate found in the CA PEM")
			}
			config.RootCAs = pool
		}
		if o.certPEM != nil || o.keyPEM != nil {
			cert, err := tls.X509KeyPair(o.certPEM, o.keyPEM)
			if err != nil {
				return nil, fmt.Errorf("tributary: WithClientCertificate: %w", err)
			}
			config.Certificates = []tls.Certificate{cert}
		}
		creds = credentials.NewTLS(config)
	}
	dialOptions := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes)),
		// Reconnect quickly after a gateway restart; Follow adds its own jittered backoff.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
		// A stream whose gateway vanished without closing the connection ends UNAVAILABLE
		// instead of waiting forever (the gateway pings too, every 30 s).
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}
	if o.token != "" {
		dialOptions = append(dialOptions, grpc.WithPerRPCCredentials(bearer(o.token)))
	}
	dialOptions = append(dialOptions, o.dialOptions...)
	conn, err := grpc.NewClient(target, dialOptions...)
	if err != nil {
		return nil, fmt.Errorf("tributary: dial %s: %w", target, err)
	}
	return NewClient(conn), nil
}

// NewClient makes a client of an existing connection (Close then closes it).
func NewClient(conn *grpc.ClientConn) *Client {
	return &Client{
		conn:          conn,
		Gateway:       pb.NewGatewayClient(conn),
		Translators:   pb.NewTranslatorsClient(conn),
		Subscriptions: pb.NewSubscriptionsClient(conn),
	}
}

// Conn returns the underlying connection.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// uploadChunkBytes is the size of one piece of an upload.
const uploadChunkBytes = 1 << 20

// UploadTranslator uploads a WebAssembly component as a new version of the translator name and
// returns that version (its digest pins it in a TranslatorRef). The size and SHA-256 are sent
// in the header, so the gateway checks them. Gateway errors are *Error.
func (c *Client) UploadTranslator(ctx context.Context, name string, component []byte) (*pb.TranslatorVersion, error) {
	sum := sha256.Sum256(component)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Translators.Upload(ctx)
	if err != nil {
		return nil, asError(err)
	}
	header := &pb.UploadTranslatorRequest{Part: &pb.UploadTranslatorRequest_Header{Header: &pb.UploadHeader{
		Name: name, Size: uint64(len(component)), Sha256: hex.EncodeToString(sum[:]),
	}}}
	if err := stream.Send(header); err != nil {
		// The server ended the call: its status comes with CloseAndRecv.
		_, err = stream.CloseAndRecv()
		return nil, asError(err)
	}
	for start := 0; start < len(component); start += uploadChunkBytes {
		end := min(start+uploadChunkBytes, len(component))
		chunk := &pb.UploadTranslatorRequest{Part: &pb.UploadTranslatorRequest_Chunk{Chunk: component[start:end]}}
		if err := stream.Send(chunk); err != nil {
			_, err = stream.CloseAndRecv()
			return nil, asError(err)
		}
	}
	version, err := stream.CloseAndRecv()
	if err != nil {
		return nil, asError(err)
	}
	return version, nil
}
