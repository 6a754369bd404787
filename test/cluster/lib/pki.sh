# The cluster's CA, certificates, service-account keys and kubeconfigs (openssl). Sourced by up.

# Signs a P-256 key for subject $2 with the cluster CA; $3 = subjectAltName list (may be empty).
issue_cert() { # dir/name subject sans
  local base="$1" subject="$2" sans="$3" ext
  ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth"
  [ -n "$sans" ] && ext+=$'\n'"subjectAltName=$sans"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$base.key" 2>/dev/null
  openssl req -new -key "$base.key" -subj "$subject" -out "$base.csr"
  openssl x509 -req -in "$base.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -days 3650 -extfile <(printf '%s\n' "$ext") -out "$base.crt" 2>/dev/null
  rm "$base.csr"
}

# A self-contained kubeconfig (credentials embedded), usable from any directory.
write_kubeconfig() { # file cert-base
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: kiln
    cluster:
      server: https://127.0.0.1:6443
      certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
  - name: kiln
    user:
      client-certificate-data: $(base64 -w0 "$2.crt")
      client-key-data: $(base64 -w0 "$2.key")
contexts:
  - name: kiln
    context:
      cluster: kiln
      user: kiln
current-context: kiln
EOF
}

issue_pki() { # pki-dir kubeconfig-dir
  pki="$1"
  local kubeconfigs="$2"
  mkdir -p "$pki" "$kubeconfigs"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=kiln-test-cluster-ca" -days 3650 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$pki/ca.crt"
  issue_cert "$pki/apiserver" "/CN=kube-apiserver" \
    "IP:127.0.0.1,IP:$gateway,IP:$api_service_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  issue_cert "$pki/apiserver-kubelet-client" "/O=system:masters/CN=kube-apiserver-kubelet-client" ""
  issue_cert "$pki/kubelet" "/O=system:nodes/CN=system:node:$node_name" "IP:$gateway,DNS:$node_name"
  issue_cert "$pki/admin" "/O=system:masters/CN=kiln-admin" ""
  issue_cert "$pki/kube-controller-manager" "/CN=system:kube-controller-manager" ""
  issue_cert "$pki/kube-scheduler" "/CN=system:kube-scheduler" ""
  issue_cert "$pki/kube-proxy" "/CN=system:kube-proxy" ""
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null
  openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
  write_kubeconfig "$kubeconfigs/admin.kubeconfig" "$pki/admin"
  write_kubeconfig "$kubeconfigs/kubelet.kubeconfig" "$pki/kubelet"
  local c
  for c in kube-controller-manager kube-scheduler kube-proxy; do write_kubeconfig "$kubeconfigs/$c.kubeconfig" "$pki/$c"; done
  chmod 600 "$pki"/*.key "$kubeconfigs"/*
}
