// helmrender renders a Helm chart the way `helm template` does, for tests on machines without Helm (it is
// not packaged for Debian): Go's text/template with the Sprig function library (both what Helm uses) plus
// Helm's own functions (include, tpl, required, toYaml, fromYaml, toJson, lookup), values.yaml deep-merged
// with -f files (a null removes a key), values checked against values.schema.json when the chart has one,
// and .Release / .Chart / .Capabilities / .Template as Helm sets them for `helm template`.
//
// usage: helmrender [-f values.yaml]... [--name RELEASE] [--namespace NS] [--kube-version 1.30] CHART_DIR
package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"github.com/xeipuuv/gojsonschema"
	"sigs.k8s.io/yaml"
)

type values = map[string]interface{}

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "helmrender: "+format+"\n", a...)
	os.Exit(1)
}

func readYAML(path string) values {
	b, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	v := values{}
	if err := yaml.Unmarshal(b, &v); err != nil {
		fail("%s: %v", path, err)
	}
	return v
}

// merge overlays src onto dst as Helm coalesces user values onto chart defaults.
func merge(dst, src values) values {
	for k, sv := range src {
		if sv == nil {
			delete(dst, k)
			continue
		}
		sm, sIsMap := sv.(map[string]interface{})
		dm, dIsMap := dst[k].(map[string]interface{})
		if sIsMap && dIsMap {
			dst[k] = merge(dm, sm)
		} else {
			dst[k] = sv
		}
	}
	return dst
}

type apiVersions []string

func (a apiVersions) Has(v string) bool {
	for _, x := range a {
		if x == v {
			return true
		}
	}
	return false
}

func main() {
	var files []string
	release, namespace, kube, chartDir := "release-name", "default", "1.30", ""
	args := os.Args[1:]
	for i := 0; i < len(args); i++ {
		next := func() string {
			if i+1 >= len(args) {
				fail("%s needs a value", args[i])
			}
			i++
			return args[i]
		}
		switch args[i] {
		case "-f", "--values":
			files = append(files, next())
		case "--name":
			release = next()
		case "--namespace", "-n":
			namespace = next()
		case "--kube-version":
			kube = next()
		default:
			if strings.HasPrefix(args[i], "-") || chartDir != "" {
				fail("unknown argument %q", args[i])
			}
			chartDir = args[i]
		}
	}
	if chartDir == "" {
		fail("usage: helmrender [-f values.yaml]... [--name RELEASE] [--namespace NS] CHART_DIR")
	}

	meta := readYAML(filepath.Join(chartDir, "Chart.yaml"))
	chart := values{}
	for k, v := range meta { // Helm exposes Chart.yaml fields capitalised: .Chart.Name, .Chart.AppVersion
		chart[strings.ToUpper(k[:1])+k[1:]] = v
	}
	vals := readYAML(filepath.Join(chartDir, "values.yaml"))
	for _, f := range files {
		vals = merge(vals, readYAML(f))
	}
	if schema, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json")); err == nil {
		res, err := gojsonschema.Validate(gojsonschema.NewBytesLoader(schema), gojsonschema.NewGoLoader(vals))
		if err != nil {
			fail("values.schema.json: %v", err)
		}
		if !res.Valid() {
			msgs := []string{}
			for _, e := range res.Errors() {
				msgs = append(msgs, "- "+e.String())
			}
			fail("values don't meet the specifications of the schema(s):\n%s", strings.Join(msgs, "\n"))
		}
	}

	major, minor := "1", strings.TrimPrefix(kube, "1.")
	top := values{
		"Values": vals,
		"Chart":  chart,
		"Release": values{"Name": release, "Namespace": namespace, "Service": "Helm", "IsInstall": true,
			"IsUpgrade": false, "Revision": 1},
		"Capabilities": values{
			"KubeVersion": values{"Version": "v" + kube + ".0", "GitVersion": "v" + kube + ".0", "Major": major, "Minor": minor},
			"APIVersions": apiVersions{"v1", "apps/v1", "autoscaling/v2", "policy/v1", "networking.k8s.io/v1"},
		},
	}

	root := template.New("chart")
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	includeDepth := 0
	funcs["include"] = func(name string, data interface{}) (string, error) {
		if includeDepth++; includeDepth > 100 {
			return "", fmt.Errorf("include %q: too deep", name)
		}
		defer func() { includeDepth-- }()
		var b bytes.Buffer
		err := root.ExecuteTemplate(&b, name, data)
		return b.String(), err
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var b bytes.Buffer
		err = t.Execute(&b, data)
		return strings.ReplaceAll(b.String(), "<no value>", ""), err
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil {
			return nil, fmt.Errorf("%s", msg)
		}
		if s, ok := v.(string); ok && s == "" {
			return nil, fmt.Errorf("%s", msg)
		}
		return v, nil
	}
	funcs["toYaml"] = func(v interface{}) string {
		b, err := yaml.Marshal(v)
		if err != nil {
			return ""
		}
		return strings.TrimSuffix(string(b), "\n")
	}
	funcs["fromYaml"] = func(s string) values {
		v := values{}
		if err := yaml.Unmarshal([]byte(s), &v); err != nil {
			v["Error"] = err.Error()
		}
		return v
	}
	funcs["lookup"] = func(string, string, string, string) values { return values{} } // no cluster: as helm template
	root.Funcs(funcs).Option("missingkey=zero")

	name, _ := meta["name"].(string)
	var names []string
	err := filepath.Walk(filepath.Join(chartDir, "templates"), func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(chartDir, p)
		tname := name + "/" + filepath.ToSlash(rel)
		if _, err := root.New(tname).Parse(string(b)); err != nil {
			return err
		}
		names = append(names, tname)
		return nil
	})
	if err != nil {
		fail("%v", err)
	}
	sort.Strings(names)
	var out bytes.Buffer
	for _, t := range names {
		base := filepath.Base(t)
		if strings.HasPrefix(base, "_") || strings.HasSuffix(base, ".txt") { // partials and NOTES.txt
			continue
		}
		data := values{}
		for k, v := range top {
			data[k] = v
		}
		data["Template"] = values{"Name": t, "BasePath": name + "/templates"}
		var b bytes.Buffer
		if err := root.ExecuteTemplate(&b, t, data); err != nil {
			fail("%v", err)
		}
		s := strings.ReplaceAll(b.String(), "<no value>", "")
		if strings.TrimSpace(s) == "" {
			continue
		}
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", t, strings.Trim(s, "\n"))
	}
	os.Stdout.Write(out.Bytes())
}
