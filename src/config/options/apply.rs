//! One option applied to [`Options`] with ssh's first-value-wins rule.

use super::*;

impl Options {
    /// Applies one option with ssh's precedence: the first value obtained for
    /// a setting wins (so `-o` beats config files read later), while list
    /// keywords accumulate. Values are validated even when they will be
    /// ignored, as ssh does, so a typo never goes unnoticed.
    pub fn apply(&mut self, key: &str, value: &str) -> Result<ApplyOutcome, OptionError> {
        let key = key.trim();
        let (name, keyword) =
            lookup(key).ok_or_else(|| OptionError::UnknownKeyword(key.to_owned()))?;
        let v = Args {
            name,
            value: value.trim(),
        };
        if v.value.is_empty() {
            return Err(OptionError::MissingValue(name.to_owned()));
        }
        Ok(match keyword {
            Keyword::Directive => return Err(OptionError::Directive(name.to_owned())),
            Keyword::Unsupported => ApplyOutcome::Unsupported,
            Keyword::HostName => set_once(&mut self.host_name, v.single()?),
            Keyword::User => set_once(&mut self.user, v.single()?),
            Keyword::HostKeyAlias => set_once(&mut self.host_key_alias, v.single()?),
            Keyword::BindAddress => set_once(&mut self.bind_address, v.single()?),
            Keyword::BindInterface => set_once(&mut self.bind_interface, v.single()?),
            Keyword::Tag => set_once(&mut self.tag, v.single()?),
            Keyword::StdinNull => set_once(&mut self.stdin_null, parse_flag(&v)?),
            Keyword::TcpKeepAlive => set_once(&mut self.tcp_keep_alive, parse_flag(&v)?),
            Keyword::ClearAllForwardings => {
                set_once(&mut self.clear_all_forwardings, parse_flag(&v)?)
            }
            Keyword::StreamLocalBindUnlink => {
                set_once(&mut self.stream_local_bind_unlink, parse_flag(&v)?)
            }
            Keyword::SyslogFacility => {
                let f = SyslogFacility::parse(&v.single()?)
                    .ok_or_else(|| v.bad("DAEMON, USER, AUTH, AUTHPRIV or LOCAL0..LOCAL7"))?;
                set_once(&mut self.syslog_facility, f)
            }
            Keyword::GssapiAuthentication => {
                set_once(&mut self.gssapi_authentication, parse_flag(&v)?)
            }
            Keyword::GssapiDelegateCredentials => {
                parse_flag(&v)?;
                ApplyOutcome::Applied
            }
            Keyword::SendEnv => {
                for pattern in v.split()? {
                    if pattern.contains('=') {
                        return Err(v.bad("variable names or patterns, without '='"));
                    }
                    match pattern.strip_prefix('-') {
                        Some(gone) => self.send_env.retain(|p| !match_pattern(p, gone)),
                        None if !self.send_env.contains(&pattern) => self.send_env.push(pattern),
                        None => {}
                    }
                }
                ApplyOutcome::Applied
            }
            Keyword::SetEnv => {
                let mut pairs = Vec::new();
                for arg in v.split()? {
                    match arg.split_once('=') {
                        Some((name, value)) if !name.is_empty() => {
                            pairs.push((name.to_string(), value.to_string()))
                        }
                        _ => return Err(v.bad("NAME=VALUE pairs")),
                    }
                }
                set_once(&mut self.set_env, pairs)
            }
            Keyword::IpQos => {
                let qos = IpQos::parse(&v.split()?).map_err(|e| v.bad(e))?;
                set_once(&mut self.ip_qos, qos)
            }
            Keyword::ForkAfterAuthentication => {
                set_once(&mut self.fork_after_authentication, parse_flag(&v)?)
            }
            Keyword::SessionType => {
                let t = SessionType::parse(&v.single()?)
                    .ok_or_else(|| v.bad("none, subsystem or default"))?;
                set_once(&mut self.session_type, t)
            }
            Keyword::Tunnel => {
                let t = TunnelMode::parse(&v.single()?)
                    .ok_or_else(|| v.bad("yes, point-to-point, ethernet or no"))?;
                set_once(&mut self.tunnel, t)
            }
            Keyword::TunnelDevice => {
                let d = TunnelDevice::parse(&v.single()?)
                    .ok_or_else(|| v.bad("local_tun[:remote_tun], each a number or any"))?;
                set_once(&mut self.tunnel_device, d)
            }
            Keyword::AddressFamily => {
                let family = AddressFamily::parse(&v.single()?)
                    .ok_or_else(|| v.bad("any, inet or inet6"))?;
                set_once(&mut self.address_family, family)
            }
            Keyword::RekeyLimit => {
                let limit = RekeyLimit::parse(&v.split()?).map_err(|e| v.bad(e))?;
                set_once(&mut self.rekey_limit, limit)
            }
            Keyword::ForwardAgent => {
                let on = ForwardAgent::parse(&v.single()?)
                    .ok_or_else(|| v.bad("yes, no, an agent socket path or $VARIABLE"))?;
                set_once(&mut self.forward_agent, on)
            }
            Keyword::EscapeChar => {
                let c = values::parse_escape_char(&v.single()?)
                    .ok_or_else(|| v.bad("a single character, ^ and a character, or none"))?;
                set_once(&mut self.escape_char, c)
            }
            Keyword::ControlMaster => {
                let value = match v.single()?.to_ascii_lowercase().as_str() {
                    "yes" | "true" => ControlMaster::Yes,
                    "no" | "false" => ControlMaster::No,
                    "auto" => ControlMaster::Auto,
                    "ask" => ControlMaster::Ask,
                    "autoask" => ControlMaster::AutoAsk,
                    _ => return Err(v.bad("yes, no, auto, ask, autoask")),
                };
                set_once(&mut self.control_master, value)
            }
            Keyword::ControlPath => set_once(&mut self.control_path, v.single()?),
            Keyword::ControlPersist => {
                let value = v.single()?;
                let word = matches!(
                    value.to_ascii_lowercase().as_str(),
                    "yes" | "no" | "true" | "false"
                );
                if !word && value != "none" && parse_time(&v).is_err() {
                    return Err(v.bad("yes, no or a time such as 10m"));
                }
                set_once(&mut self.control_persist, value)
            }
            Keyword::Ciphers => set_once(&mut self.ciphers, v.single()?),
            Keyword::KexAlgorithms => set_once(&mut self.kex_algorithms, v.single()?),
            Keyword::Macs => set_once(&mut self.macs, v.single()?),
            Keyword::HostKeyAlgorithms => set_once(&mut self.host_key_algorithms, v.single()?),
            Keyword::Port => set_once(&mut self.port, parse_port(&v)?),
            Keyword::IdentityFile => {
                let path = v.single()?;
                if self.identity_files.contains(&path) {
                    ApplyOutcome::Ignored
                } else if self.identity_files.len() >= MAX_IDENTITY_FILES {
                    return Err(v.bad(format!(
                        "at most {MAX_IDENTITY_FILES} identity files in total"
                    )));
                } else {
                    self.identity_files.push(path);
                    ApplyOutcome::Applied
                }
            }
            Keyword::CertificateFile => {
                let path = v.single()?;
                if self.certificate_files.contains(&path) {
                    ApplyOutcome::Ignored
                } else if self.certificate_files.len() >= MAX_IDENTITY_FILES {
                    return Err(v.bad(format!(
                        "at most {MAX_IDENTITY_FILES} certificate files in total"
                    )));
                } else {
                    self.certificate_files.push(path);
                    ApplyOutcome::Applied
                }
            }
            Keyword::UserKnownHostsFile => {
                set_once(&mut self.user_known_hosts_files, parse_file_list(&v)?)
            }
            Keyword::GlobalKnownHostsFile => {
                set_once(&mut self.global_known_hosts_files, parse_file_list(&v)?)
            }
            Keyword::StrictHostKeyChecking => {
                let value = match v.single()?.to_ascii_lowercase().as_str() {
                    "yes" | "true" => StrictHostKeyChecking::Yes,
                    "no" | "false" | "off" => StrictHostKeyChecking::No,
                    "ask" => StrictHostKeyChecking::Ask,
                    "accept-new" => StrictHostKeyChecking::AcceptNew,
                    _ => return Err(v.bad("yes, no, ask, accept-new")),
                };
                set_once(&mut self.strict_host_key_checking, value)
            }
            Keyword::BatchMode => set_once(&mut self.batch_mode, parse_flag(&v)?),
            Keyword::ExitOnForwardFailure => {
                set_once(&mut self.exit_on_forward_failure, parse_flag(&v)?)
            }
            Keyword::PasswordAuthentication => {
                set_once(&mut self.password_authentication, parse_flag(&v)?)
            }
            Keyword::KbdInteractiveAuthentication => {
                set_once(&mut self.kbd_interactive_authentication, parse_flag(&v)?)
            }
            Keyword::IdentitiesOnly => set_once(&mut self.identities_only, parse_flag(&v)?),
            Keyword::HashKnownHosts => set_once(&mut self.hash_known_hosts, parse_flag(&v)?),
            Keyword::GatewayPorts => set_once(&mut self.gateway_ports, parse_flag(&v)?),
            Keyword::PubkeyAuthentication => {
                let value = match v.single()?.to_ascii_lowercase().as_str() {
                    "yes" | "true" | "unbound" | "host-bound" => true,
                    "no" | "false" => false,
                    _ => return Err(v.bad("yes, no, unbound, host-bound")),
                };
                set_once(&mut self.pubkey_authentication, value)
            }
            Keyword::Compression => {
                // Not a plain flag in ssh: it refuses true/false here.
                let value = match v.single()?.to_ascii_lowercase().as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(v.bad("yes or no")),
                };
                set_once(&mut self.compression, value)
            }
            Keyword::LogLevel => set_once(&mut self.log_level, parse_log_level(&v)?),
            Keyword::IdentityAgent => set_once(&mut self.identity_agent, parse_identity_agent(&v)?),
            // `none` (and, for ConnectTimeout, 0) store nothing, so as in ssh
            // a later value can still set them.
            Keyword::ConnectTimeout => match parse_time(&v)? {
                _ if self.connect_timeout.is_some() => ApplyOutcome::Ignored,
                Some(t) if !t.is_zero() => set_once(&mut self.connect_timeout, t),
                _ => ApplyOutcome::Applied,
            },
            Keyword::ServerAliveInterval => match parse_time(&v)? {
                _ if self.server_alive_interval.is_some() => ApplyOutcome::Ignored,
                Some(t) => set_once(&mut self.server_alive_interval, t),
                None => ApplyOutcome::Applied,
            },
            Keyword::ServerAliveCountMax => {
                set_once(&mut self.server_alive_count_max, parse_int(&v)?)
            }
            Keyword::ConnectionAttempts => set_once(&mut self.connection_attempts, parse_int(&v)?),
            Keyword::LocalForward => {
                let fwd = match v.split()?.as_slice() {
                    [listen, connect] => forward::parse_local(&join_forward(listen, connect)),
                    [_] => {
                        return Err(v.bad(forward_expected(
                            ForwardKind::Local,
                            "the connect argument is missing \
                             (listen and connect are separated by whitespace)",
                        )));
                    }
                    _ => return Err(v.extra_arguments(ForwardKind::Local)),
                };
                let fwd = fwd.map_err(|e| v.bad_forward(&e))?;
                push_new(&mut self.local_forwards, fwd, |a, b| {
                    a.listen == b.listen && a.connect == b.connect
                })
            }
            Keyword::RemoteForward => {
                let fwd = match v.split()?.as_slice() {
                    [listen, connect] => forward::parse_remote(&join_forward(listen, connect)),
                    // ssh reads a lone argument as a remote dynamic forward only.
                    [listen] => match forward::parse_remote(listen) {
                        Ok(fwd) if fwd.connect.is_some() => {
                            return Err(v.bad(forward_expected(
                                ForwardKind::Remote,
                                "listen and connect must be separated by whitespace",
                            )));
                        }
                        other => other,
                    },
                    _ => return Err(v.extra_arguments(ForwardKind::Remote)),
                };
                let fwd = fwd.map_err(|e| v.bad_forward(&e))?;
                push_new(&mut self.remote_forwards, fwd, |a, b| {
                    a.listen == b.listen && a.connect == b.connect
                })
            }
            Keyword::DynamicForward => {
                let fwd = forward::parse_dynamic(&v.single()?).map_err(|e| v.bad_forward(&e))?;
                push_new(&mut self.dynamic_forwards, fwd, |a, b| {
                    a.bind == b.bind && a.port == b.port
                })
            }
            // ssh hands these two the raw rest of the line, quotes and all.
            // A real jump host sets ssh's proxy command too, so each of the
            // pair yields to the other; `ProxyJump none` only disables jumping.
            Keyword::ProxyCommand => {
                if self.proxy_jump.as_deref().is_some_and(|j| j != "none") {
                    ApplyOutcome::Ignored
                } else {
                    set_once(&mut self.proxy_command, v.value.to_owned())
                }
            }
            Keyword::ProxyJump => {
                let jump = parse_jump(&v)?;
                if self.proxy_command.is_some() {
                    ApplyOutcome::Ignored
                } else {
                    set_once(&mut self.proxy_jump, jump)
                }
            }
        })
    }

    /// [`split_option`] then [`Options::apply`]: one `-o` argument.
    pub fn apply_arg(&mut self, arg: &str) -> Result<ApplyOutcome, OptionError> {
        let (key, value) = split_option(arg)?;
        self.apply(&key, &value)
    }
}
